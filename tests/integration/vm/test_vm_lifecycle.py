"""A guest's whole life through the CLI: macvtap with an ext4 disk and an IO thread, kills, a failed boot."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.vm.conftest import our_leftovers, vm_unavailable

pytestmark = [pytest.mark.root, pytest.mark.vm, pytest.mark.slow]
LATSCOPE = str(Path(sys.executable).parent / "latscope")


@pytest.fixture(autouse=True)
def _need_vm():
    why = vm_unavailable()
    if why:
        pytest.skip(why)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_macvtap_ext4_iothread_run_and_nothing_left(tmp_path) -> None:
    """vm:macvtap, guest cwd on an ext4 virtio-blk disk served by IO io0: every packet, the log on ext4."""
    proc = subprocess.run(
        [LATSCOPE, "run", "--topology", "vm:macvtap", "--vm-accel", "tcg", "--count", "600", "--vm-cwd", "ext4",
         "--vm-iothread", "--stream-log", "--json", "--results", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["packets"]["received"] == 600 and doc["packets"]["lost"] == 0
    run_dir = Path(doc["path"])
    vm = json.loads((run_dir / "run.json").read_text())["vm"]
    assert vm["network"]["variant"] == "macvtap"
    assert " ext4 " in vm["cwd"]["mount"] and vm["cwd"]["mount"].startswith("/dev/vda")
    assert any(t["name"] == "IO io0" for t in vm["threads"])
    assert any("iothread=io0" in a for a in vm["qemu"]["argv"])
    log = (run_dir / "stream-receiver.log").read_text().splitlines()
    assert len([ln for ln in log if ln.strip()]) >= 600
    # The controller's pid is in every name it gave (QEMU's -name too); it exited, so nothing may remain.
    name = vm["qemu"]["argv"][vm["qemu"]["argv"].index("-name") + 1]
    assert our_leftovers(int(name.split("latscope-")[1].split(",")[0])) == []


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_sigkill_of_the_controller_ends_qemu_and_the_next_run_reaps_the_rest(tmp_path) -> None:
    """SIGKILL mid-run: QEMU dies with its controller; the next VM run removes the namespace and work dir."""
    env = {**os.environ, "LATSCOPE_RESULTS": str(tmp_path / "r")}
    ctl = subprocess.Popen([LATSCOPE, "run", "--topology", "vm", "--vm-accel", "tcg", "--count", "60000", "-q"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        qemu = None
        # Mid-run: the guest receiver's result will land in the staging dir only at the end, but the
        # host sender's progress file exists once the workers are set up and the sender started.
        while time.monotonic() < deadline:
            comms = {k: _comm(k) for k in _children(ctl.pid)}  # a short-lived child may be gone already
            qemu = next((k for k, c in comms.items() if "qemu" in c), qemu)
            senders = [k for k, c in comms.items() if c == "latscope-tx"]
            if qemu and senders:
                break
            time.sleep(0.2)
        assert qemu and senders, "the run never reached its sending phase"
        ctl.send_signal(signal.SIGKILL)
        ctl.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and Path(f"/proc/{qemu}").exists() and \
                Path(f"/proc/{qemu}/stat").read_text().split()[2] != "Z":
            time.sleep(0.1)
        state = Path(f"/proc/{qemu}/stat").read_text().split()[2] if Path(f"/proc/{qemu}").exists() else "gone"
        assert state in ("gone", "Z"), f"QEMU {qemu} still running ({state})"
    finally:
        if ctl.poll() is None:
            ctl.kill()
    # The next VM run (here: one that fails fast) reaps what the killed one could not remove.
    nxt = subprocess.run([LATSCOPE, "run", "--topology", "vm", "--vm-accel", "tcg", "--count", "10",
                          "--vm-append", "rdinit=/nonexistent", "--vm-boot-timeout", "60s"],
                         env=env, capture_output=True, text=True, timeout=200)
    assert nxt.returncode == 1
    assert our_leftovers(ctl.pid) == []


def test_a_guest_that_does_not_boot_is_reported_with_its_console(tmp_path) -> None:
    """A guest kernel without a working init: exit 1, the console's last lines in the error, nothing left."""
    proc = subprocess.Popen([LATSCOPE, "run", "--topology", "vm", "--vm-accel", "tcg", "--count", "10",
                             "--vm-append", "rdinit=/nonexistent", "--vm-boot-timeout", "90s",
                             "--results", str(tmp_path / "r")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _out, err = proc.communicate(timeout=200)
    assert proc.returncode == 1, err
    assert "guest" in err and ("No working init" in err or "Kernel panic" in err), err
    assert not list((tmp_path / "r").glob("2*")), "a failed boot stored a run"
    assert our_leftovers(proc.pid) == []
