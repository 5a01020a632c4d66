"""Where runs live and how they get there: ids, staging, atomic commit, lookup."""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from latscope.errors import ConfigError, FormatError, NotFoundError, StoreError
from latscope.files import fsync_dir, reason, write_atomic
from latscope.process import pid_alive
from latscope.safetext import quote
from latscope.store.runfile import (
    RunRecord,
    check_record,
    created_at,
    is_run_id,
    load_run_json,
    write_json_atomic,
)
from latscope.store.samples import Samples, read_samples

DEFAULT_ROOT = "latscope-results"
ENV_ROOT = "LATSCOPE_RESULTS"
RUN_FILE = "run.json"
SAMPLES_FILE = "samples.parquet"
_STAGING_PREFIX = ".staging-"
_WRITE_TEST_PREFIX = ".write-test-"


def resolve_results_root(option: str | os.PathLike[str] | None = None) -> Path:
    """The results root: ``--results``, else $LATSCOPE_RESULTS, else ./latscope-results."""
    if option:
        return Path(option)
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env)
    return Path(DEFAULT_ROOT)


def new_run_id(now: _dt.datetime | None = None) -> str:
    """A readable, unique id: UTC time to the microsecond plus 6 random hex digits."""
    now = now or _dt.datetime.now(_dt.UTC)
    return f"{now:%Y%m%d-%H%M%S-%f}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class StoredRun:
    """A committed run directory and its parsed run.json."""

    path: Path
    record: RunRecord

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def samples_path(self) -> Path:
        return self.path / SAMPLES_FILE

    def samples(self, columns: tuple[str, ...] | list[str] | None = None) -> Samples:
        """Load this run's samples (all columns, or only ``columns``)."""
        return read_samples(self.samples_path, columns)


class ResultsStore:
    """A results root: a directory of run directories."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- writing ---------------------------------------------------------

    def preflight(self, needed_bytes: int) -> None:
        """Fail before a run starts if the root cannot take ``needed_bytes`` more."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"results root {self.root} cannot be created: {exc.strerror}") from None
        if not self.root.is_dir():
            raise StoreError(f"results root {self.root} is not a directory")
        probe = self.root / f"{_WRITE_TEST_PREFIX}{os.getpid()}"
        try:
            with open(probe, "wb") as fh:
                fh.write(b"\0" * 4096)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            reason = "disk full" if exc.errno == errno.ENOSPC else exc.strerror
            raise StoreError(f"results root {self.root} is not writable: {reason}") from None
        finally:
            # On a read-only root the probe was never created and unlink fails too.
            with contextlib.suppress(OSError):
                probe.unlink()
        st = os.statvfs(self.root)
        free = st.f_bavail * st.f_frsize
        if free < needed_bytes:
            raise StoreError(
                f"results root {self.root} has {free // 1024} KiB free, the run needs about "
                f"{needed_bytes // 1024} KiB"
            )

    @contextlib.contextmanager
    def staging(self, run_id: str) -> Iterator[Path]:
        """A private directory to build a run in; removed unless committed."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{_STAGING_PREFIX}{run_id}-{os.getpid()}"
        try:
            path.mkdir()
            # Held until the run is committed or dropped: how reap_staging tells a live run's
            # directory from one whose process was killed (also across pid namespaces).
            lock = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise StoreError(f"cannot create a run directory in {self.root}: {exc.strerror}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield path
        finally:
            try:
                if path.exists():
                    shutil.rmtree(path, ignore_errors=True)
            finally:
                os.close(lock)

    def reap_staging(self) -> list[str]:
        """Remove what killed runs left in the root (staging directories, write probes); their names.

        A staging directory is left over when its owner (the pid at the end of
        its name) is gone *and* nobody holds its lock; either alone keeps it.
        """
        reaped: list[str] = []
        try:
            entries = list(self.root.iterdir())
        except OSError:
            return reaped
        for p in entries:
            if p.name.startswith(_STAGING_PREFIX):
                owner = p.name.rsplit("-", 1)[-1]
                if not owner.isdigit() or int(owner) == os.getpid() or pid_alive(int(owner)):
                    continue
                if p.is_symlink() or not p.is_dir() or _locked(p):
                    continue
                shutil.rmtree(p, ignore_errors=True)
            elif p.name.startswith(_WRITE_TEST_PREFIX):
                owner = p.name[len(_WRITE_TEST_PREFIX):]
                if not owner.isdigit() or int(owner) == os.getpid() or pid_alive(int(owner)) or not p.is_file():
                    continue
                with contextlib.suppress(OSError):
                    p.unlink()
            else:
                continue
            if not os.path.lexists(p):
                reaped.append(p.name)
        return sorted(reaped)

    def commit(self, staging: Path, record: RunRecord) -> StoredRun:
        """Write run.json into ``staging`` and rename it to its final name in one step."""
        try:
            check_record(record)  # what the loader would refuse is never written
        except ValueError as exc:
            raise FormatError(f"run {record.run_id} not saved: {exc}") from None
        final = self.root / record.run_id
        if os.path.lexists(final):
            raise StoreError(f"run {record.run_id} already exists in {self.root}")
        try:
            write_json_atomic(staging / RUN_FILE, record.to_json())
            fsync_dir(staging)
            os.rename(staging, final)
            fsync_dir(self.root)
        except StoreError as exc:
            raise StoreError(f"could not save run {record.run_id} in {self.root}: {exc}") from None
        except OSError as exc:
            raise StoreError(f"could not save run {record.run_id} in {self.root}: {reason(exc)}") from None
        return StoredRun(final, record)

    def store_run(self, staging: Path, record: RunRecord, columns: dict) -> StoredRun:
        """Write the samples and run.json into ``staging`` and commit it; the store is unchanged on failure.

        When the results root cannot take the run (a disk that filled up
        during the run), the measurement is not thrown away: the run is
        written to a fresh directory under $TMPDIR instead, and NotStored
        says where it could not be written and where it was kept.
        """
        from latscope.store.samples import write_samples

        try:
            write_samples(staging / SAMPLES_FILE, columns)
        except StoreError as exc:
            failed = f"could not save run {record.run_id} in {self.root}: {exc}"
        else:
            try:
                return self.commit(staging, record)
            except StoreError as exc:
                failed = str(exc)
        raise NotStored(failed, rescue_run(record, columns))

    def save(self, record: RunRecord, columns: dict, extra_files: dict[str, bytes] | None = None) -> StoredRun:
        """Write a whole run (samples + run.json + optional files) atomically: all of it or nothing."""
        from latscope.store.samples import write_samples

        with self.staging(record.run_id) as stage:
            try:
                write_samples(stage / SAMPLES_FILE, columns)
                for name, data in (extra_files or {}).items():
                    target = stage / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    write_atomic(target, data)
            except StoreError as exc:
                raise StoreError(f"could not save run {record.run_id} in {self.root}: {exc}") from None
            except OSError as exc:
                raise StoreError(f"could not save run {record.run_id} in {self.root}: {reason(exc)}") from None
            return self.commit(stage, record)

    # -- reading ---------------------------------------------------------

    def run_dirs(self) -> list[Path]:
        """Directories of the root that hold a run.json (or may: unreadable ones are included), by name.

        Hidden names (staging, temporary files) are not runs. A directory
        that cannot be read is listed, so that `runs` can say why it was left
        out instead of crashing on it.
        """
        out = []
        for entry in self._entries():
            if entry.name.startswith("."):
                continue
            try:
                if not entry.is_dir():
                    continue
                os.stat(Path(entry.path) / RUN_FILE)
            except FileNotFoundError:
                continue  # a directory of something else: not ours to judge
            except OSError:
                pass  # unreadable: listed, and reported by runs()
            out.append(Path(entry.path))
        return sorted(out)

    def _entries(self) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(self.root) as it:
                return list(it)
        except FileNotFoundError:
            return []
        except NotADirectoryError:
            raise StoreError(f"results root {self.root} is not a directory") from None
        except OSError as exc:
            raise StoreError(f"cannot list the results root {self.root}: {reason(exc)}") from None

    def runs(self) -> tuple[list[StoredRun], list[tuple[Path, str]]]:
        """Readable runs oldest first (by recorded creation time), and (path, reason) for the others."""
        good: list[StoredRun] = []
        bad: list[tuple[Path, str]] = []
        for path in self.run_dirs():
            try:
                good.append(self._load(path))
            except FormatError as exc:
                bad.append((path, str(exc)))
        return sorted(good, key=creation_order), bad

    def resolve(self, ref: str) -> StoredRun:
        """Find a run by id, unique id prefix, name (newest wins), 'latest', or directory path."""
        if not ref:
            raise ConfigError("empty run reference")
        if ref.startswith(".") or os.sep in ref:
            as_path = Path(ref)
            if _exists(as_path):
                return load_run_dir(as_path, strict_name=False)
        if ref in ("latest", "last"):
            runs, bad = self.runs()
            if not runs:
                raise NotFoundError(f"no readable runs in {self.root}" + (f" ({len(bad)} unreadable)" if bad else ""))
            return runs[-1]
        dirs = [d for d in self.run_dirs() if is_run_id(d.name)]
        exact = [d for d in dirs if d.name == ref]
        if exact:
            return self._load(exact[0])
        prefixed = [d for d in dirs if d.name.startswith(ref)]
        if len(prefixed) == 1:
            return self._load(prefixed[0])
        if len(prefixed) > 1:
            raise ConfigError(f"run reference {quote(ref)} is ambiguous: {', '.join(d.name for d in prefixed[:5])}")
        named = [r for r in self.runs()[0] if r.record.name == ref]
        if named:
            return named[-1]
        raise NotFoundError(f"no run {quote(ref)} in {self.root} (see `latscope ls`)")

    def _load(self, path: Path) -> StoredRun:
        return load_run_dir(path, strict_name=True)


class NotStored(StoreError):
    """A measured run the results root could not take; ``kept`` is where it was written instead (or None)."""

    def __init__(self, failed: str, kept: Path | None) -> None:
        where = (f"; the run was kept in {kept} (`latscope show {kept}`; move it into the results root later)"
                 if kept is not None else "; it could not be kept anywhere else either")
        super().__init__(failed + where)
        self.kept = kept


def rescue_run(record: RunRecord, columns: dict) -> Path | None:
    """Write a run to $TMPDIR/latscope-unsaved-XXXX/RUN_ID (a complete run directory); None if that fails too."""
    import tempfile

    from latscope.store.samples import write_samples

    try:
        parent = Path(tempfile.mkdtemp(prefix="latscope-unsaved-"))
    except OSError:
        return None
    path = parent / record.run_id
    try:
        path.mkdir()
        write_samples(path / SAMPLES_FILE, columns)
        write_json_atomic(path / RUN_FILE, record.to_json())
    except (OSError, StoreError):
        shutil.rmtree(parent, ignore_errors=True)
        return None
    return path


def load_run_dir(path: Path, *, strict_name: bool) -> StoredRun:
    """The run in directory ``path``; with ``strict_name`` its name must be the run's id.

    Runs in the store are found by directory name and shown by run_id, so the
    two must agree (a run.json saying ``../../etc`` must not be listed under
    that id). A run directory named on the command line may have been copied
    under another name.
    """
    record = load_run_json(path / RUN_FILE)
    if strict_name and path.name != record.run_id:
        raise FormatError(f"{path / RUN_FILE}: run_id {quote(record.run_id)} does not match its directory "
                          f"{quote(path.name)}")
    return StoredRun(path, record)


def creation_order(run: StoredRun) -> tuple[_dt.datetime, str]:
    """Sort key: the recorded creation time, then the id (sub-second ids break ties in time order)."""
    return created_at(run.record.created), run.path.name


def _exists(path: Path) -> bool:
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _locked(path: Path) -> bool:
    """True while some process holds the staging lock of ``path`` (see ResultsStore.staging)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return True  # cannot tell: keep it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False

