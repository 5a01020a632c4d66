"""--vm-root initramfs: latscope runs in a guest with no root file system, from a self-contained initramfs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.vm.conftest import our_leftovers, vm_unavailable

pytestmark = [pytest.mark.root, pytest.mark.vm, pytest.mark.slow]
LATSCOPE = str(Path(sys.executable).parent / "latscope")


def test_a_guest_without_a_root_file_system_carries_every_packet_and_leaves_nothing(tmp_path) -> None:
    """One boot: every packet arrives, the guest's / is the initramfs (no 9p share of the host's root, only
    the --vm-cwd 9p share), the guest's own collectors ran from it, its size is recorded, nothing is left."""
    why = vm_unavailable()
    if why:
        pytest.skip(why)
    proc = subprocess.run(
        [LATSCOPE, "run", "--topology", "vm", "--vm-root", "initramfs", "--vm-cwd", "9p", "--vm-accel", "tcg",
         "--count", "500", "--json", "--results", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["packets"]["sent"], doc["packets"]["received"], doc["packets"]["lost"]) == (500, 500, 0)
    run = json.loads((Path(doc["path"]) / "run.json").read_text())
    vm = run["vm"]
    # The guest saw no root file system: / is the initramfs, nothing mounted from the host's root.
    mounts = vm["guest"]["mounts"]
    assert "rootfs / rootfs" in mounts, mounts
    assert not [m for m in mounts if m.split()[2] == "9p" or m.startswith("hostroot ")], mounts
    argv = " ".join(vm["qemu"]["argv"])
    assert "mount_tag=hostroot" not in argv and "mount_tag=cwd" in argv
    assert vm["cwd"]["mount"].startswith("cwd /latscope 9p ")  # the 9p modules came from the initramfs
    # Its size is recorded and is that of the image QEMU booted.
    initrd = Path(vm["qemu"]["argv"][vm["qemu"]["argv"].index("-initrd") + 1])
    assert vm["root"]["kind"] == "initramfs" and vm["initrd_bytes"] == initrd.stat().st_size > 0
    assert vm["root"]["python"] == run["environment"]["guest"]["latscope"]["python"]
    assert {"numpy", "pyroute2"} <= set(vm["root"]["packages"])
    assert not {"scipy", "matplotlib", "duckdb"} & set(vm["root"]["packages"])
    assert any("self-contained initramfs" in n and f"{vm['initrd_bytes'] / 1e6:.1f} MB" in n for n in vm["notes"])
    # The guest's collectors ran from the initramfs: none of them failed for want of a module or a path.
    guest_env = run["environment"]["guest"]
    assert guest_env["kernel"]["release"] == vm["guest_kernel"]
    assert not {k: v for k, v in guest_env.items() if isinstance(v, dict) and "error" in v}
    name = vm["qemu"]["argv"][vm["qemu"]["argv"].index("-name") + 1]
    assert our_leftovers(int(name.split("latscope-")[1].split(",")[0])) == []
