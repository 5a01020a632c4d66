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
from latscope.process import pid_alive
from latscope.store.runfile import RunRecord, load_run_json, write_json_atomic
from latscope.store.samples import read_samples, Samples

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
    """A sortable, readable, unique id: UTC time plus 6 random hex digits."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


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
        final = self.root / record.run_id
        if final.exists():
            raise StoreError(f"run {record.run_id} already exists in {self.root}")
        try:
            write_json_atomic(staging / RUN_FILE, record.to_json())
            _fsync_dir(staging)
            os.rename(staging, final)
            _fsync_dir(self.root)
        except OSError as exc:
            reason = "disk full" if exc.errno == errno.ENOSPC else exc.strerror
            raise StoreError(f"could not save run {record.run_id} in {self.root}: {reason}") from None
        return StoredRun(final, record)

    def save(self, record: RunRecord, columns: dict, extra_files: dict[str, bytes] | None = None) -> StoredRun:
        """Write a whole run (samples + run.json + optional files) atomically: all of it or nothing."""
        from latscope.store.samples import write_samples

        with self.staging(record.run_id) as stage:
            try:
                write_samples(stage / SAMPLES_FILE, columns)
                for name, data in (extra_files or {}).items():
                    target = stage / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
            except OSError as exc:
                reason = "disk full" if exc.errno == errno.ENOSPC else exc.strerror
                raise StoreError(f"could not save run {record.run_id} in {self.root}: {reason}") from None
            return self.commit(stage, record)

    def rewrite_record(self, run: StoredRun, record: RunRecord) -> StoredRun:
        """Replace a committed run's run.json atomically (e.g. to add a breakdown summary)."""
        try:
            write_json_atomic(run.path / RUN_FILE, record.to_json())
        except OSError as exc:
            raise StoreError(f"could not update run {record.run_id}: {exc.strerror}") from None
        return StoredRun(run.path, record)

    # -- reading ---------------------------------------------------------

    def run_dirs(self) -> list[Path]:
        """Committed run directories, oldest first (ids sort by time)."""
        if not self.root.is_dir():
            return []
        return sorted(
            p for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / RUN_FILE).exists()
        )

    def runs(self) -> tuple[list[StoredRun], list[tuple[Path, str]]]:
        """All readable runs, and (path, reason) for the ones that could not be read."""
        good: list[StoredRun] = []
        bad: list[tuple[Path, str]] = []
        for path in self.run_dirs():
            try:
                good.append(StoredRun(path, load_run_json(path / RUN_FILE)))
            except FormatError as exc:
                bad.append((path, str(exc)))
        return good, bad

    def resolve(self, ref: str) -> StoredRun:
        """Find a run by id, unique id prefix, name (newest wins), 'latest', or directory path."""
        if not ref:
            raise ConfigError("empty run reference")
        as_path = Path(ref)
        if (as_path / RUN_FILE).exists() and (as_path.is_absolute() or os.sep in ref or ref.startswith(".")):
            return StoredRun(as_path, load_run_json(as_path / RUN_FILE))
        dirs = self.run_dirs()
        if ref in ("latest", "last"):
            if not dirs:
                raise NotFoundError(f"no runs in {self.root}")
            return self._load(dirs[-1])
        exact = [d for d in dirs if d.name == ref]
        if exact:
            return self._load(exact[0])
        prefixed = [d for d in dirs if d.name.startswith(ref)]
        if len(prefixed) == 1:
            return self._load(prefixed[0])
        if len(prefixed) > 1:
            raise ConfigError(f"run reference {ref!r} is ambiguous: {', '.join(d.name for d in prefixed[:5])}")
        named = []
        for d in reversed(dirs):
            try:
                rec = load_run_json(d / RUN_FILE)
            except FormatError:
                continue
            if rec.name == ref:
                named.append(StoredRun(d, rec))
                break
        if named:
            return named[0]
        raise NotFoundError(f"no run {ref!r} in {self.root} (see `latscope ls`)")

    def _load(self, path: Path) -> StoredRun:
        return StoredRun(path, load_run_json(path / RUN_FILE))


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
