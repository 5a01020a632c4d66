"""Opening latscope's Parquet files: regular files only, one wording for every failure, magic and version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latscope.errors import FormatError
from latscope.files import open_regular, reason


def open_parquet(path: Path, where: str, what: str, magic: bytes, supported: int) -> Any:
    """A ``pyarrow.parquet.ParquetFile`` of ``path`` whose magic and version were checked.

    ``where`` starts every message (a path or "run X: samples.parquet"),
    ``what`` names the kind of file ("samples file", "trace table"). Every
    failure is a FormatError: missing, not a regular file (a FIFO would hang
    the reader), unreadable, not Parquet or cut short, foreign, too new.
    The file is read through the descriptor that was checked, so it cannot
    be swapped for something else in between.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        fh, _size = open_regular(path)
    except FileNotFoundError:
        raise FormatError(f"{where}: {what} is missing") from None
    except FormatError as exc:
        raise FormatError(f"{where}: {str(exc).partition(': ')[2]}") from None
    except OSError as exc:
        raise FormatError(f"{where}: cannot read the {what}: {reason(exc)}") from None
    try:
        pf = pq.ParquetFile(fh)
    except (pa.ArrowException, OSError) as exc:
        fh.close()
        raise FormatError(f"{where}: {what} is corrupt or not Parquet ({first_line(exc)})") from None
    try:
        check_magic_version(pf.schema_arrow.metadata, where, what, magic, supported)
    except FormatError:
        pf.close()
        raise
    return pf


def check_magic_version(metadata: dict[bytes, bytes] | None, where: str, what: str, magic: bytes,
                        supported: int) -> int:
    """The file's schema_version; FormatError when the magic is wrong or the version is newer than ours.

    ``where`` starts every message (a path or "run X: samples.parquet"), ``what``
    names the kind of file ("samples file", "trace table").
    """
    meta = metadata or {}
    if meta.get(b"magic") != magic:
        raise FormatError(f"{where}: not a latscope {what} (magic missing)")
    try:
        version = int(meta.get(b"schema_version", b"0"))
    except ValueError:
        raise FormatError(f"{where}: unreadable {what} schema_version") from None
    if version > supported:
        raise FormatError(f"{where}: {what} schema_version {version} is newer than this latscope supports "
                          f"({supported}); upgrade latscope")
    return version


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
