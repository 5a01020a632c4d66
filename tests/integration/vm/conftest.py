"""One booted guest for the VM tests (a session fixture: a TCG boot costs ~8 s), and leftover checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from latscope import netns as ns


def vm_unavailable() -> str | None:
    """Why a VM cannot be booted here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root"
    if not shutil.which("qemu-system-x86_64"):
        return "qemu-system-x86 is not installed"
    if not list(Path("/boot").glob("vmlinuz-*")):
        return "no guest kernel (linux-image-amd64) installed"
    return None


@pytest.fixture(scope="session")
def vm_guest():
    """A TCG guest on a bridge, shared by every test that only measures through it."""
    why = vm_unavailable()
    if why:
        pytest.skip(why)
    from latscope.topo.vm.guest import running_guest
    from latscope.topo.vm.options import VmOptions

    with running_guest(VmOptions(accel="tcg", clock_samples=100)) as guest:
        yield guest


def our_leftovers(pid: int) -> list[str]:
    """What a latscope process ``pid`` may have left: namespaces, VM work dirs, disks, QEMU processes."""
    left = [n for n in ns.owned() if n.startswith(f"{ns.PREFIX}{pid}-")]
    left += [str(p) for p in Path(tempfile.gettempdir()).glob(f"latscope-vm-{pid}-*")]
    from latscope.topo.vm.image import cache_dir

    left += [str(p) for p in cache_dir().glob(f"disk-{pid}.img")]
    out = subprocess.run(["pgrep", "-f", f"guest=latscope-{pid},"], capture_output=True, text=True).stdout
    left += [f"qemu pid {p}" for p in out.split()]
    return left
