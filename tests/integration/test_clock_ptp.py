"""env.clock against a real ptp4l: a master and a slave with software timestamping across two namespaces' veth."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from latscope.env import clock

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(not (shutil.which("ptp4l") and shutil.which("pmc")),
                                 reason="ptp4l and pmc (Debian package linuxptp) are needed")]

# Fast PTP intervals, so that the slave locks in seconds: announce every 250 ms, sync every 125 ms.
FAST = ["--logAnnounceInterval=-2", "--logSyncInterval=-3", "--logMinDelayReqInterval=-3",
        "--announceReceiptTimeout=2"]
LOCK_TIMEOUT_S = 30.0


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def ptp_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """ptp4l master in one namespace, slave in the other (UDP/IPv4 on 198.18.77.0/24); their UDS paths.

    With -S both use CLOCK_REALTIME, which the slave disciplines: the kernel's clock state is saved before
    and put back afterwards (the two namespaces share the host's one clock, so the slave steers it by ppm).
    """
    tag = f"latscope-{os.getpid()}-ptp"
    ns_m, ns_s = f"{tag}-m", f"{tag}-s"
    if_m, if_s = f"lsp{os.getpid() % 100000}m", f"lsp{os.getpid() % 100000}s"
    saved = clock.kernel_state()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        _ip("netns", "add", ns_m)
        _ip("netns", "add", ns_s)
        _ip("link", "add", if_m, "netns", ns_m, "type", "veth", "peer", "name", if_s, "netns", ns_s)
        for ns, ifname, addr in ((ns_m, if_m, "198.18.77.1/24"), (ns_s, if_s, "198.18.77.2/24")):
            _ip("-n", ns, "addr", "add", addr, "dev", ifname)
            _ip("-n", ns, "link", "set", ifname, "up")
        uds_m, uds_s = str(tmp_path / "master"), str(tmp_path / "slave")
        for ns, ifname, role, uds in ((ns_m, if_m, ["--masterOnly=1", "--free_running=1"], uds_m),
                                      (ns_s, if_s, ["-s", "--step_threshold=0", "--first_step_threshold=0",
                                                    "--pi_proportional_const=0.1", "--pi_integral_const=0.3"],
                                       uds_s)):
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, "timeout", "120", "ptp4l", "-i", ifname, "-S", "-4", *role, *FAST,
                 f"--uds_address={uds}"], stdout=subprocess.DEVNULL, stderr=(tmp_path / f"{role[0]}.log").open("w")))
        yield uds_m, uds_s
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for ns in (ns_m, ns_s):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        clock.restore_kernel_state(saved)


def test_pmc_reports_slave_state_offset_and_path_delay(ptp_pair: tuple[str, str]) -> None:
    """The slave reaches SLAVE (polled, bounded); env.clock reads its state, offset and path delay, and the
    master's port says MASTER."""
    uds_m, uds_s = ptp_pair
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    doc: dict = {}
    while time.monotonic() < deadline:
        doc = clock.ptp(uds=uds_s)
        if doc.get("port_state") == "SLAVE":
            break
        time.sleep(0.25)
    assert doc.get("port_state") == "SLAVE", doc
    assert doc["running"] and "error" not in doc
    assert isinstance(doc["offset_from_master_ns"], float)
    # Both ends read one clock: whatever the offset, it is within a software-timestamped veth's path delay scale.
    assert doc["mean_path_delay_ns"] is not None and doc["mean_path_delay_ns"] > 0
    assert doc["gm_present"] is True
    assert clock.host_bound_ns({"ptp": doc}) == (int(abs(doc["offset_from_master_ns"])), "ptp4l offset from master")
    master = clock.ptp(uds=uds_m)
    assert master["port_state"] == "MASTER"
