"""Where a run's ``--stream-log`` files are written: ``--log-dir DIR`` and ``--log-fs tmpfs|ext2|ext4``.

``LogFs`` is a Capture (latscope.session) that comes first among a run's
captures: ``start`` prepares the directory (a fresh file system for
``--log-fs``: a tmpfs, or ext2/ext4 on a loop device over a sparse image)
and tells the session where the halves write their logs; ``stop`` copies the
logs into the run's directory (nothing measured is lost) and records what
was used; ``close`` unmounts, lets the loop device go and deletes the image
(also after errors and Ctrl-C). Names carry the pid (latscope.mounts), so
the next run reaps what a SIGKILLed one left.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latscope import mounts
from latscope.errors import CaptureError, ConfigError
from latscope.safetext import quote

FILESYSTEMS = ("tmpfs", "ext2", "ext4")
#: mkfs without lazy initialisation: no ext4lazyinit thread writing inode tables during the run.
MKFS_EXTRA = {"ext2": [], "ext4": ["-E", "lazy_itable_init=0,lazy_journal_init=0"]}
#: Room for the logs: a line per packet per half is under 100 bytes; the rest is margin.
BYTES_PER_PACKET = 512
BASE_BYTES = 64 << 20
LOG_NAMES = ("stream-sender.log", "stream-receiver.log")


def fs_size(count: int, extra_bytes: int = 0) -> int:
    """The size of a --log-fs for ``count`` packets and ``extra_bytes`` more (an io load writing there)."""
    return BASE_BYTES + count * BYTES_PER_PACKET + extra_bytes


def check_log_options(log_dir: str | None, log_fs: str | None, *, stream_log: bool, topology: str) -> None:
    """The log options make sense together and here (before anything is set up); ConfigError if not."""
    if log_dir is None and log_fs is None:
        return
    given = " and ".join(o for o, v in (("--log-dir", log_dir), ("--log-fs", log_fs)) if v is not None)
    if not stream_log:
        verb = "make" if log_dir is not None and log_fs is not None else "makes"
        raise ConfigError(f"{given} only {verb} sense with --stream-log (without it the logs are written after "
                          "the run, to the run's directory)")
    if topology == "vm" or topology.startswith("vm:"):
        raise ConfigError(f"{given}: on --topology vm the guest's half writes its log to --vm-cwd "
                          "(tmpfs, 9p, ext2, ext4); use that")
    if log_fs is not None and log_fs not in FILESYSTEMS:
        raise ConfigError(f"--log-fs {quote(log_fs)}: choose from {', '.join(FILESYSTEMS)}")
    if log_dir is not None:
        if not os.path.isdir(log_dir):
            raise ConfigError(f"--log-dir {quote(log_dir)} is not a directory")
        if log_fs is not None and any(os.scandir(log_dir)):
            raise ConfigError(f"--log-dir {quote(log_dir)} is not empty: --log-fs mounts a file system over it")
    if log_fs in ("ext2", "ext4"):
        for tool, package in ((f"mkfs.{log_fs}", "e2fsprogs"), ("mount", "mount"), ("losetup", "mount")):
            if shutil.which(tool) is None:
                raise ConfigError(f"--log-fs {log_fs} needs {tool}, which is not installed "
                                  f"(Debian package {package}: apt-get install {package})")
    if log_fs is not None and os.geteuid() != 0:
        raise ConfigError(f"--log-fs {log_fs} needs root (it mounts a file system)")


@dataclass
class LogFs:
    """The stream logs' directory for one run (see the module docstring)."""

    fs: str | None
    log_dir: str | None
    size_bytes: int = BASE_BYTES
    tmp_root: Path | None = None
    #: Where the halves write; set by start.
    directory: Path | None = None
    scratch: Path | None = None
    image: Path | None = None
    mounted: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def paths(self) -> dict[str, str]:
        assert self.directory is not None
        prefix = "" if self.fs else f"latscope-{os.getpid()}-"
        return {"sender": str(self.directory / (prefix + LOG_NAMES[0])),
                "receiver": str(self.directory / (prefix + LOG_NAMES[1]))}

    def current_dir(self) -> str | None:
        """Where the logs go (for io's default directory); None before start."""
        return str(self.directory) if self.directory is not None else None

    # -- Capture protocol --------------------------------------------------

    def start(self, workdir: Path, path: Any) -> dict[str, Any]:
        if getattr(path, "guest", None) is not None:
            raise ConfigError("--log-dir/--log-fs: not on --topology vm (the guest writes to --vm-cwd)")
        if self.fs is None:
            assert self.log_dir is not None
            self.directory = Path(os.path.abspath(self.log_dir))
        else:
            self._make_fs()
        return {"stream_logs": self.paths()}

    def stop(self, workdir: Path) -> dict[str, Any]:
        written = 0
        kept = []
        for role, src in self.paths().items():
            source = Path(src)
            if not source.exists():
                continue
            target = workdir / f"stream-{role}.log"
            written += source.stat().st_size
            try:
                if self.fs is None:
                    shutil.move(source, target)
                else:
                    shutil.copyfile(source, target)
            except OSError as exc:
                raise CaptureError(f"cannot copy the stream log {source} into the run: {exc.strerror}") from None
            kept.append(target.name)
        record: dict[str, Any] = {"dir": str(self.directory), "fs": self.fs or "as found", **self.info,
                                  "log_bytes": written, "logs": kept}
        if self.fs is not None and self.directory is not None:
            st = os.statvfs(self.directory)
            record["used_bytes"] = (st.f_blocks - st.f_bfree) * st.f_frsize
        return {"record": {"log": record}, "completeness": {},
                "config": {"log": {"dir": self.log_dir, "fs": self.fs}}}

    def close(self) -> None:
        """Unmount and delete; what cannot go is noted in ``problems`` (the CLI warns; the next run reaps it).

        It never raises: it runs after the measurement, and an error here must not cost the run.
        """
        if self.mounted and self.directory is not None:
            err = mounts.unmount(self.directory)
            if err:
                self.problems.append(f"cannot unmount {self.directory}: {err} (the next run removes it)")
            else:
                self.mounted = False
        if self.image is not None and not self.mounted:
            self.image.unlink(missing_ok=True)
        if self.scratch is not None and not self.mounted:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    # -- making the file system ------------------------------------------

    def _make_fs(self) -> None:
        tmp = Path(self.tmp_root or tempfile.gettempdir())
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{mounts.SCRATCH_PREFIX}{os.getpid()}-", dir=tmp))
        if self.log_dir is not None:
            self.directory = Path(os.path.abspath(self.log_dir))
        else:
            self.directory = self.scratch / "mnt"
            self.directory.mkdir()
        if self.fs == "tmpfs":
            source = mounts.tmpfs_source()
            opts = f"size={self.size_bytes},mode=0755"
            err = mounts.run_tool(["mount", "-t", "tmpfs", "-o", opts, source, str(self.directory)])
            device = source
        else:
            assert self.fs in ("ext2", "ext4")
            self.image = self.scratch / f"{self.fs}.img"
            with open(self.image, "wb") as f:
                f.truncate(self.size_bytes)  # sparse: only what is written takes room
            err = mounts.run_tool([f"mkfs.{self.fs}", "-q", "-F", "-L", "latscope-logs", *MKFS_EXTRA[self.fs],
                                   str(self.image)])
            if err is None:
                err = mounts.run_tool(["mount", "-t", self.fs, "-o", "loop", str(self.image), str(self.directory)])
            device = None
        if err is not None:
            self.close()
            raise CaptureError(f"--log-fs {self.fs}: cannot make the file system: {err}")
        self.mounted = True
        m = mounts.mount_at(self.directory)
        if m is None:
            self.close()
            raise CaptureError(f"--log-fs {self.fs}: {self.directory} is not mounted after mount")
        device = device or m.source
        self.info = {"device": device, "backing_file": mounts.loop_backing(device) if self.image else None,
                     "image_bytes": self.size_bytes, "mount_options": m.options, "fs_options": m.super_options,
                     "fstype": m.fstype, "mkfs_options": MKFS_EXTRA.get(self.fs, [])}
