"""latscope.mounts: mountinfo read back, and a dead run's log file systems told from live and foreign ones."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from latscope import mounts


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_mountinfo_fields_and_escapes(tmp_path: Path) -> None:
    """Source, target (octal escapes undone), type and both option sets come from the right columns."""
    info = tmp_path / "mountinfo"
    info.write_text("36 35 98:0 / /mnt/my\\040logs rw,noatime master:1 - ext4 /dev/loop3 rw,data=ordered\n"
                    "37 35 0:5 / /run/x rw shared:2 - tmpfs latscope-77-logs rw,size=1024k\n")
    first, second = mounts.mounts(info)
    assert (first.source, first.target, first.fstype, first.options, first.super_options) == \
        ("/dev/loop3", "/mnt/my logs", "ext4", "rw,noatime", "rw,data=ordered")
    assert second.source == "latscope-77-logs" and mounts.mount_at("/run/x", info) == second


def test_stale_are_only_dead_owners(tmp_path: Path) -> None:
    """A tmpfs or loop image of a dead pid is stale; ours, a live one's and anyone else's are not."""
    dead, live = _dead_pid(), os.getppid()
    sys_block = tmp_path / "block"
    for n, backing in (("loop0", f"/tmp/latscope-logfs-{dead}-ab/ext4.img"),
                       ("loop1", f"/tmp/latscope-logfs-{live}-cd/ext4.img (deleted)"),
                       ("loop2", "/var/lib/other.img")):
        (sys_block / n / "loop").mkdir(parents=True)
        (sys_block / n / "loop" / "backing_file").write_text(backing + "\n")
    info = tmp_path / "mountinfo"
    info.write_text(
        f"1 0 0:1 / /a rw - tmpfs latscope-{dead}-logs rw\n"
        f"2 0 0:2 / /b rw - tmpfs latscope-{live}-logs rw\n"
        f"3 0 0:3 / /c rw - tmpfs latscope-{os.getpid()}-logs rw\n"
        "4 0 7:0 / /d rw - ext4 /dev/loop0 rw\n"
        "5 0 7:1 / /e rw - ext4 /dev/loop1 rw\n"
        "6 0 7:2 / /f rw - ext4 /dev/loop2 rw\n")
    assert [m.target for m in mounts.stale_mounts(info, sys_block)] == ["/a", "/d"]
    assert mounts.stale_loops(sys_block) == ["/dev/loop0"]
