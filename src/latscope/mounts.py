"""Mounts and loop devices latscope makes for a run's logs (--log-fs), and finding them again after a kill.

Everything carries the owner's pid: a tmpfs is mounted with the source name
``latscope-<pid>-logs``; an ext2/ext4 image lives in a scratch directory
``latscope-logfs-<pid>-*`` in the temporary directory and is mounted through
a loop device (``mount -o loop``: the device goes with the unmount), so
``reap_stale`` can tell a dead run's mount from anyone else's, whatever
directory it was mounted on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from latscope.process import pid_alive

SCRATCH_PREFIX = "latscope-logfs-"
_SCRATCH = re.compile(rf"^{SCRATCH_PREFIX}(\d+)-")
_TMPFS_SOURCE = re.compile(r"^latscope-(\d+)-logs$")
_BACKING = re.compile(rf"/{SCRATCH_PREFIX}(\d+)-[^/]*/")
SYS_BLOCK = Path("/sys/block")
MOUNTINFO = Path("/proc/self/mountinfo")


def tmpfs_source(pid: int | None = None) -> str:
    """The source name of a tmpfs made for process ``pid``'s logs."""
    return f"latscope-{os.getpid() if pid is None else pid}-logs"


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo, the fields latscope needs."""

    source: str
    target: str
    fstype: str
    options: str        # per-mount options (rw,relatime)
    super_options: str  # the file system's own (data=ordered)


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def mounts(mountinfo: Path = MOUNTINFO) -> list[Mount]:
    out = []
    for line in mountinfo.read_text().splitlines():
        left, sep, right = line.partition(" - ")
        a, b = left.split(), right.split()
        if not sep or len(a) < 6 or len(b) < 3:
            continue
        out.append(Mount(_unescape(b[1]), _unescape(a[4]), b[0], a[5], b[2]))
    return out


def mount_at(target: str | Path, mountinfo: Path = MOUNTINFO) -> Mount | None:
    """The topmost mount on ``target``, if any."""
    found = [m for m in mounts(mountinfo) if m.target == str(target)]
    return found[-1] if found else None


def loop_backing(device: str, sys_block: Path = SYS_BLOCK) -> str | None:
    """The file behind loop device ``/dev/loopN`` (None: not a loop device, or not attached)."""
    name = os.path.basename(device)
    try:
        return (sys_block / name / "loop" / "backing_file").read_text().strip()
    except OSError:
        return None


def run_tool(argv: list[str], timeout_s: float = 120.0) -> str | None:
    """Run a short system tool; None when it worked, else its last line of output (the reason)."""
    try:
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
    return lines[-1].strip() if lines else f"exit status {done.returncode}"


def unmount(target: str | Path) -> str | None:
    """Unmount ``target``; a busy mount is detached lazily (it goes once its last user does)."""
    err = run_tool(["umount", str(target)])
    if err is None:
        return None
    if mount_at(target) is None:
        return None
    return run_tool(["umount", "-l", str(target)])


def _dead(pid_text: str) -> bool:
    pid = int(pid_text)
    return pid != os.getpid() and not pid_alive(pid)


def stale_mounts(mountinfo: Path = MOUNTINFO, sys_block: Path = SYS_BLOCK) -> list[Mount]:
    """Log file systems whose owner is dead: tmpfs by source name, loop mounts by their image's path."""
    out = []
    for m in mounts(mountinfo):
        t = _TMPFS_SOURCE.match(m.source)
        if t and m.fstype == "tmpfs" and _dead(t.group(1)):
            out.append(m)
            continue
        if m.source.startswith("/dev/loop"):
            backing = loop_backing(m.source, sys_block) or ""
            b = _BACKING.search(backing)
            if b and _dead(b.group(1)):
                out.append(m)
    return out


def stale_loops(sys_block: Path = SYS_BLOCK) -> list[str]:
    """Loop devices (mounted or not) whose image is in a dead owner's scratch directory."""
    out = []
    for dev in sorted(sys_block.glob("loop*")):
        b = _BACKING.search(loop_backing(dev.name, sys_block) or "")
        if b and _dead(b.group(1)):
            out.append(f"/dev/{dev.name}")
    return out


def reap_stale(tmp: Path) -> tuple[list[str], list[str]]:
    """Unmount dead runs' log file systems, detach their loop devices, delete their images (needs root).

    Returns (removed, kept) as ``kind name`` strings.
    """
    removed: list[str] = []
    kept: list[str] = []
    stale = stale_mounts()
    loops = stale_loops()
    scratch = [p for p in _entries(tmp) if (sm := _SCRATCH.match(p.name)) and _dead(sm.group(1))]
    if os.geteuid() != 0:
        kept += [f"mount {m.target} (removing it needs root)" for m in stale]
        kept += [f"loop device {d} (removing it needs root)" for d in loops]
        return removed, kept
    for m in stale:
        err = unmount(m.target)
        (kept if err else removed).append(f"mount {m.target}" + (f" ({err})" if err else ""))
    for dev in stale_loops():
        # Not mounted (a run killed between losetup and mount), or still attached after a lazy unmount.
        err = run_tool(["losetup", "-d", dev])
        (kept if err else removed).append(f"loop device {dev}" + (f" ({err})" if err else ""))
    for p in scratch:
        if any(m.target.startswith(str(p) + "/") for m in mounts()):
            kept.append(f"log file system scratch {p} (still mounted)")
            continue
        shutil.rmtree(p, ignore_errors=True)
        if not p.exists():
            removed.append(f"log file system scratch {p}")
    return removed, kept


def _entries(tmp: Path) -> list[Path]:
    try:
        return [p for p in tmp.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return []
