"""The packet authentication key: read from ``--key-file``, refused when anyone may read it.

Both halves read the same secret; every packet then carries a truncated
HMAC-SHA256 (see wire.py), so a stranger on the path who sees the stream can
neither inject packets nor take over the run.
"""

from __future__ import annotations

import os
import stat

from latscope.errors import ConfigError

#: A key file is a few dozen bytes; anything larger is not one (and /dev/zero would never end).
MAX_KEY_FILE = 4096


def load_key(path: str) -> bytes:
    """The key in ``path`` (one trailing newline removed); ConfigError for a file that cannot be a secret."""
    try:
        # O_NONBLOCK: opening a FIFO must not hang; the fstat below refuses it anyway.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"--key-file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"--key-file {path}: not a regular file")
        if st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
            raise ConfigError(f"--key-file {path}: other users may read or write it (chmod 600 {path})")
        if st.st_size > MAX_KEY_FILE:
            raise ConfigError(f"--key-file {path}: {st.st_size} bytes; a key file has at most {MAX_KEY_FILE}")
        data = os.read(fd, MAX_KEY_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"--key-file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    # `echo secret > key` and a key typed in an editor should both work.
    key = data[:-2] if data.endswith(b"\r\n") else data[:-1] if data.endswith(b"\n") else data
    if not key:
        raise ConfigError(f"--key-file {path}: the file is empty")
    return key


def optional_key(path: str | None) -> bytes | None:
    """load_key, or None without a key file."""
    return None if path is None else load_key(path)
