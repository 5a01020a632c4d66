"""tracefs access: find or mount it, and own a private instance for the length of a run.

latscope records into its own instance (``instances/latscope-<pid>-<tag>``):
its buffer size, clock, options and enabled events are the instance's and
nothing at the top level changes, so another tracer (or another latscope)
keeps working. Names carry the owner's pid so an instance left behind by a
killed process is found and removed by the next run.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from latscope.errors import PrivilegeError, TraceError
from latscope.process import pid_alive

CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
PREFIX = "latscope-"
_NAME = re.compile(rf"^{PREFIX}(\d+)-\w+$")


def _has_instances(root: Path) -> bool:
    """Whether ``root`` holds an instances/ directory; PrivilegeError when it cannot be looked into (tracefs
    is mode 700 for root on most distributions: a user without root reads nothing of it)."""
    try:
        return (root / "instances").is_dir()
    except PermissionError:
        raise PrivilegeError(f"kernel tracing needs root ({root} cannot be read without it)") from None


def find_tracefs(root: Path | None = None, *, mount: bool = True) -> Path:
    """The tracefs mount (``root`` when given); mount it at /sys/kernel/tracing when it is absent."""
    if root is not None:
        if not _has_instances(Path(root)):
            raise TraceError(f"{root} is not a tracefs mount (no instances/ directory)")
        return Path(root)
    for cand in CANDIDATES:
        if _has_instances(cand):
            return cand
    if os.geteuid() != 0:
        raise PrivilegeError("kernel tracing needs root (tracefs is not mounted and only root can mount it)")
    if mount:
        target = CANDIDATES[0]
        try:
            subprocess.run(["mount", "-t", "tracefs", "nodev", str(target)], check=True, capture_output=True,
                           text=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as exc:
            raise TraceError(f"tracefs is not mounted and mounting it at {target} failed: {exc}") from None
        if (target / "instances").is_dir():
            return target
    raise TraceError("tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)")


@dataclass
class Instance:
    """A tracefs instance latscope created; ``remove()`` is safe to call more than once."""

    root: Path
    name: str
    removed: bool = False

    @property
    def path(self) -> Path:
        return self.root / "instances" / self.name

    @classmethod
    def create(cls, root: Path, tag: str = "") -> Instance:
        name = f"{PREFIX}{os.getpid()}-{tag or secrets.token_hex(3)}"
        try:
            (root / "instances" / name).mkdir()
        except PermissionError:
            raise PrivilegeError("creating a tracefs instance needs root") from None
        except OSError as exc:
            raise TraceError(f"cannot create tracefs instance {name}: {exc.strerror}") from None
        return cls(root, name)

    def write(self, rel: str, value: str) -> None:
        try:
            with open(self.path / rel, "w") as fh:
                fh.write(value)
        except OSError as exc:
            raise TraceError(f"cannot write {value.strip()!r} to {self.path / rel}: {exc.strerror}") from None

    def read(self, rel: str) -> str:
        try:
            return (self.path / rel).read_text()
        except OSError as exc:
            raise TraceError(f"cannot read {self.path / rel}: {exc.strerror}") from None

    def read_bytes(self, rel: str) -> bytes:
        """A whole (possibly large) file such as ``trace``, read in big blocks."""
        try:
            with open(self.path / rel, "rb", buffering=0) as fh:
                parts = []
                while chunk := fh.read(1 << 22):
                    parts.append(chunk)
            return b"".join(parts)
        except OSError as exc:
            raise TraceError(f"cannot read {self.path / rel}: {exc.strerror}") from None

    def exists(self, rel: str) -> bool:
        return (self.path / rel).exists()

    def cpus(self) -> list[int]:
        out = []
        for p in (self.path / "per_cpu").glob("cpu*"):
            if p.name[3:].isdigit():
                out.append(int(p.name[3:]))
        return sorted(out)

    def remove(self, wait_s: float = 5.0) -> None:
        """Stop tracing and remove the instance (waits while a worker still holds trace_marker open)."""
        if self.removed or not self.path.exists():
            self.removed = True
            return
        try:
            (self.path / "tracing_on").write_text("0")
        except OSError:
            pass
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.path.rmdir()
                self.removed = True
                return
            except FileNotFoundError:
                self.removed = True
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise TraceError(f"cannot remove tracefs instance {self.path}: {exc.strerror}") from None
                time.sleep(0.05)


def owned(root: Path) -> list[str]:
    """latscope instances present under ``root``."""
    try:
        return sorted(p.name for p in (root / "instances").iterdir() if _NAME.match(p.name))
    except OSError:
        return []


def stale(root: Path) -> list[str]:
    """latscope instances under ``root`` whose owning process is gone (each holds its buffer until removed)."""
    out = []
    for name in owned(root):
        m = _NAME.match(name)
        assert m is not None
        pid = int(m.group(1))
        if pid != os.getpid() and not pid_alive(pid):
            out.append(name)
    return out


def reap_stale(root: Path) -> list[str]:
    """Remove latscope instances whose owning process is gone; return their names."""
    reaped = []
    for name in stale(root):
        try:
            Instance(root, name).remove(wait_s=0.5)
            reaped.append(name)
        except TraceError:
            continue
    return reaped


def saved_cmdlines(root: Path) -> dict[int, str]:
    """The kernel's pid -> comm map (``saved_cmdlines``, shared by all instances), {} when unreadable."""
    try:
        text = (root / "saved_cmdlines").read_text(errors="replace")
    except OSError:
        return {}
    return parse_cmdlines(text)


def parse_cmdlines(text: str) -> dict[int, str]:
    """``saved_cmdlines``: one ``pid comm`` per line."""
    out = {}
    for line in text.splitlines():
        pid, _, comm = line.partition(" ")
        if pid.isdigit():
            out[int(pid)] = comm
    return out


@dataclass(frozen=True)
class CpuStats:
    """per_cpu/cpuN/stats of an instance: events kept and lost on one CPU."""

    cpu: int
    entries: int
    overrun: int
    commit_overrun: int
    dropped: int
    oldest_event_ts: str | None

    @property
    def lost(self) -> int:
        return self.overrun + self.commit_overrun + self.dropped


def cpu_stats(inst: Instance) -> list[CpuStats]:
    """Read every CPU's stats file (missing fields read as 0)."""
    out = []
    for cpu in inst.cpus():
        try:
            text = inst.read(f"per_cpu/cpu{cpu}/stats")
        except TraceError:
            continue
        out.append(parse_stats(cpu, text))
    return out


def parse_stats(cpu: int, text: str) -> CpuStats:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()

    def num(key: str) -> int:
        try:
            return int(fields.get(key, "0").split()[0])
        except (ValueError, IndexError):
            return 0

    return CpuStats(cpu, num("entries"), num("overrun"), num("commit overrun"), num("dropped events"),
                    fields.get("oldest event ts"))
