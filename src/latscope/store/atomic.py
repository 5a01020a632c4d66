"""Writing a file so that readers see the old content or the new one, never half of it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from latscope.errors import StoreError


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` to a temporary name beside ``path``, fsync it, and rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        reason = "disk full" if exc.errno == errno.ENOSPC else exc.strerror
        raise StoreError(f"cannot write {path}: {reason}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
