"""Files latscope writes and reads: atomic writes that never replace what is not a plain file, and
bounded reads of regular files only.

Every file latscope writes (report -o, --png, --perfetto, run.json, Parquet
tables, the workers' results) goes through `atomic_output`: a regular file
(or a new name) is written to a private temporary name beside it, fsynced and
renamed over it, so a reader sees the old content or the new, never half. A
target that is not a regular file -- /dev/full, /dev/null, a FIFO, a terminal
-- is written into as it is and never renamed over: renaming would turn a
device node into an HTML file. A symlink is written through: the file it
points to gets the new content (atomically, when that is a regular file) and
the link stays a link.

Reading goes the other way: `open_regular` opens only regular files, without
blocking (a FIFO where run.json should be would hang a plain open) and
without opening devices at all (opening some has side effects), and
`read_regular` caps how much it reads (run.json symlinked to /dev/zero must
not eat the memory). This module imports nothing heavy: the probe workers use
it to write their results.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import BinaryIO

from latscope.errors import ConfigError, FormatError, StoreError


def reason(exc: OSError) -> str:
    """An OSError as a short phrase with its errno name: 'No space left on device (ENOSPC)'."""
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc)
    return f"{text} ({name})" if name else text


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through; on success it becomes ``path`` in one step.

    Raises StoreError (one line, naming the path and the errno) when the file
    cannot be written; nothing is left behind then, and the old ``path`` is
    untouched. The body may close the file it was given (pyarrow's streams do).
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {reason(exc)}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise StoreError(f"cannot write {path}: it is a directory")
    if st is not None and not stat.S_ISREG(st.st_mode):
        with _direct(path) as fh:
            yield fh
        return
    # A symlink to a regular file (or to a name not yet taken): replace the
    # file it points to, keep the link.
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    with _replacing(path, target, st) as fh:
        yield fh


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` (str is UTF-8) to ``path`` through `atomic_output`."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_output(path) as fh:
        fh.write(raw)


@contextlib.contextmanager
def _replacing(shown: Path, target: Path, st: os.stat_result | None) -> Iterator[BinaryIO]:
    try:
        fd, tmp = _create_temporary(target)
    except OSError as exc:
        raise StoreError(f"cannot write {shown}: {reason(exc)}") from None
    done = False
    try:
        # The replacement keeps the old file's permissions; a new file gets the usual 0666 & ~umask.
        os.fchmod(fd, stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask())
        fh = os.fdopen(os.dup(fd), "wb")
        try:
            yield fh
        finally:
            fh.close()
        os.fsync(fd)
        os.rename(tmp, target)
        done = True
        fsync_dir(target.parent)
    except OSError as exc:
        raise StoreError(f"cannot write {shown}: {reason(exc)}") from None
    finally:
        os.close(fd)
        if not done:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@contextlib.contextmanager
def _direct(path: Path) -> Iterator[BinaryIO]:
    # A device, FIFO or socket: write into it. O_NONBLOCK is not used, so a
    # FIFO waits for its reader like any other program's output would.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {reason(exc)}") from None
    try:
        fh = os.fdopen(os.dup(fd), "wb")
        try:
            yield fh
        finally:
            fh.close()
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {reason(exc)}") from None
    finally:
        os.close(fd)


def _create_temporary(target: Path) -> tuple[int, str]:
    # O_EXCL with a random name (as mkstemp, without importing tempfile into the
    # workers): a link planted at a guessable name in a shared directory is never followed.
    for _ in range(100):
        tmp = str(target.parent / f".{target.name}.{os.urandom(6).hex()}.tmp")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name")


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- reading ---------------------------------------------------------------------


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, word in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return word
    return "not a regular file"


def open_regular(path: str | os.PathLike[str], limit: int | None = None) -> tuple[BinaryIO, int]:
    """Open ``path`` for reading if it is a regular file (symlinks followed); return the file and its size.

    Raises FormatError when it is anything else or larger than ``limit``
    bytes, and lets OSError (missing, permission denied) through for the
    caller to word. Devices are never opened: stat comes first, and the
    open itself cannot block (O_NONBLOCK), so a file swapped for a FIFO in
    between is caught by fstat instead of hanging the read.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise FormatError(f"{path}: {file_kind(st.st_mode)}, not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FormatError(f"{path}: {file_kind(st.st_mode)}, not a regular file")
        if limit is not None and st.st_size > limit:
            raise FormatError(f"{path}: {st.st_size} bytes, more than the {limit} this file may have")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them (FormatError beyond)."""
    fh, _size = open_regular(path, limit)
    with fh:
        data = fh.read(limit + 1)
    if len(data) > limit:  # it grew after fstat
        raise FormatError(f"{path}: more than the {limit} bytes this file may have")
    return data


@contextlib.contextmanager
def held_lock(path: Path, busy: str, cannot: str) -> Iterator[None]:
    """An exclusive flock on ``path`` (created, directories too) for the block.

    ConfigError(``busy``) when another process holds it; StoreError(``cannot``: why) when it cannot be made.
    The kernel drops the lock with its holder, so a killed holder never leaves a stale one.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(f"{cannot}: {reason(exc)}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(busy) from None
        yield
    finally:
        os.close(fd)
