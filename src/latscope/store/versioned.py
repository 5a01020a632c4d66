"""The magic-and-version check every latscope Parquet file goes through."""

from __future__ import annotations

from latscope.errors import FormatError


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
