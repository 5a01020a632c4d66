"""The host topologies bridge, macvlan, vxlan and xdp: a real run across each stores every packet and a
description of every device, and leaves nothing behind (namespaces, devices, processes, XDP programs), also
when the run is killed; a topology the kernel cannot build (ovs here) is refused before anything is made."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from latscope import netns
from latscope.analysis.envdiff import flatten
from latscope.env.schema import RUN, undeclared
from latscope.store.layout import ResultsStore
from latscope.topo import TOPOLOGIES, available, bpf
from tests.conftest import BIN
from tests.integration.netutil import namespaces_of
from tests.integration.runwatch import wait_for_packets

pytestmark = pytest.mark.root

HOST_PATHS = ("bridge", "macvlan", "vxlan", "xdp")
#: Devices each topology must name in run.json, by role, with their kind.
DEVICES = {
    "bridge": {"tx": "veth", "rx": "veth", "tx-port": "veth", "rx-port": "veth", "bridge": "bridge"},
    "macvlan": {"tx": "macvlan", "rx": "macvlan", "parent": "veth", "parent-peer": "veth"},
    "vxlan": {"tx": "vxlan", "rx": "vxlan", "tx-underlay": "veth", "rx-underlay": "veth"},
    "xdp": {"tx": "veth", "rx": "veth", "s1": "veth", "r1": "veth"},
}
ROLES = {"bridge": ("tx", "rx", "br"), "macvlan": ("tx", "rx", "mid"), "vxlan": ("tx", "rx"),
         "xdp": ("tx", "rx", "mid")}


def root_links() -> set[str]:
    """Device names in the test's (the root) network namespace."""
    return set(os.listdir("/sys/class/net"))


def xdp_prog_ids(nsnames: list[str]) -> list[int]:
    """Ids of the XDP programs attached to any device in these namespaces (read over netlink)."""
    from pyroute2 import NetNS

    ids = []
    for name in nsnames:
        with NetNS(name) as net:
            for link in net.get_links():
                xdp = link.get_attr("IFLA_XDP")
                prog = xdp.get_attr("IFLA_XDP_PROG_ID") if xdp is not None else None
                if prog:
                    ids.append(int(prog))
    return ids


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (its probe workers during a run)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return out


def assert_nothing_left(pid: int, links_before: set[str], prog_ids: list[int] = ()) -> None:
    assert namespaces_of(pid) == []
    new = {n for n in root_links() - links_before if n.startswith(f"ls{pid}")}
    assert new == set(), f"devices left in the root namespace: {new}"
    # A deleted namespace's devices, and the XDP programs attached to them, are freed by the kernel's
    # netns cleanup work after the last reference goes: asynchronously, later on a loaded machine (a
    # fresh-clone run found one of four programs still there as the run exited). A leaked program (a
    # pinned one, an fd some process kept) stays.
    deadline = time.monotonic() + 30
    while [p for p in prog_ids if bpf.prog_exists(p)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in prog_ids if bpf.prog_exists(p)] == []


def stored_run(results: Path):
    runs, bad = ResultsStore(results).runs()
    assert len(runs) == 1 and bad == []
    return runs[0]


@pytest.mark.parametrize("family", ["", pytest.param("--ipv6", marks=pytest.mark.slow),
                                    pytest.param("--l2", marks=pytest.mark.slow)])
@pytest.mark.parametrize("kind", HOST_PATHS)
def test_run_across_topology_receives_every_packet_and_leaves_nothing(kind: str, family: str, results: Path) -> None:
    """300 packets at 1 ms, all received; run.json names every device, its kind, namespace and settings."""
    before = root_links()
    proc = subprocess.run([str(BIN / "latscope"), "run", "--topology", kind, "--count", "300", "--period", "1ms",
                           "--quiet", "--json", *([family] if family else [])],
                          env={**os.environ, "LATSCOPE_RESULTS": str(results)}, capture_output=True, text=True, check=False,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["packets"]["sent"] == 300 and doc["packets"]["received"] == 300, doc["packets"]
    run = stored_run(results)
    assert run.record.status == "complete"
    topo = run.record.environment["topology"]
    assert topo["kind"] == kind
    assert {role: d["kind"] for role, d in topo["devices"].items()} == DEVICES[kind]
    assert sorted(topo["namespaces"]) == sorted(netns.name(str(proc_pid(topo)), r) for r in ROLES[kind])
    for d in topo["devices"].values():
        assert d["namespace"] in topo["namespaces"] and d["ifname"] in topo["interfaces"] and d["mtu"] > 0
    assert "198.18.0.1/30" in topo["devices"]["tx"]["addresses"]
    assert "2001:2::2/64" in topo["devices"]["rx"]["addresses"]
    # Every key the topology records is declared: compare knows which differ by configuration.
    assert undeclared(set(flatten(run.record.environment)), RUN) == []
    config = run.record.config
    assert config["topology"] == kind
    if family == "--l2":
        # Raw frames from the sender's device to the receiver's MAC.
        assert config["sender_endpoint"]["ifname"] == topo["devices"]["tx"]["ifname"]
        assert config["sender_endpoint"]["mac"] == topo["devices"]["rx"]["mac"]
    prog_ids = check_settings(kind, topo["devices"])
    assert_nothing_left(proc_pid(topo), before, prog_ids)


def proc_pid(topo: dict) -> int:
    """The pid the namespaces were named after (the run's controller)."""
    return int(topo["namespaces"][0].split("-")[1])


def check_settings(kind: str, devices: dict) -> list[int]:
    """The settings each builder promises, as the kernel reported them; the XDP program ids recorded."""
    if kind == "bridge":
        assert devices["bridge"]["settings"] == {"stp_state": 0, "forward_delay": 0, "vlan_filtering": 0}
        assert devices["tx-port"]["master"] == "bridge" and devices["rx-port"]["master"] == "bridge"
        assert devices["tx"]["peer"] == "tx-port"
    elif kind == "macvlan":
        for role in ("tx", "rx"):
            assert devices[role]["settings"]["mode"] == "bridge"
        assert devices["parent"]["namespace"] != devices["tx"]["namespace"]
    elif kind == "vxlan":
        for role, remote in (("tx", "198.18.1.2"), ("rx", "198.18.1.1")):
            s = devices[role]["settings"]
            assert (s["port"], s["remote"], s["underlay"]) == (4789, remote, f"{role}-underlay")
            assert s["vni"] == devices["tx"]["settings"]["vni"]
            assert devices[role]["mtu"] == devices[f"{role}-underlay"]["mtu"] - 50
    elif kind == "xdp":
        ids = []
        for role, program in (("s1", "latscope_redir"), ("r1", "latscope_redir"), ("tx", "latscope_pass"),
                              ("rx", "latscope_pass")):
            x = devices[role]["settings"]["xdp"]
            assert x["program"] == program and x["attached"] == "drv" and x["mode"] == "drv"
            assert len(x["tag"]) == 16 and x["prog_id"] > 0
            ids.append(x["prog_id"])
        assert devices["s1"]["settings"]["xdp"]["redirect_to"] == "r1"
        assert devices["r1"]["settings"]["xdp"]["redirect_to"] == "s1"
        assert devices["tx"]["settings"]["tx_checksum_offload"] is False
        return ids
    return []


@pytest.mark.slow
@pytest.mark.parametrize("kind", HOST_PATHS)
def test_killed_run_is_reaped_by_the_next(kind: str, tmp_path: Path) -> None:
    """SIGKILL mid-stream leaves the namespaces (nothing can remove them then); the next run removes them, and
    with them every device and XDP program; the killed run's workers do not outlive it."""
    results = tmp_path / "results"
    results.mkdir()
    env = {**os.environ, "LATSCOPE_RESULTS": str(results)}
    before = root_links()
    proc = subprocess.Popen([str(BIN / "latscope"), "run", "--topology", kind, "--count", "20000", "--period", "1ms",
                             "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_packets(results, proc, 200)
        left = namespaces_of(proc.pid)
        assert sorted(left) == sorted(netns.name(str(proc.pid), r) for r in ROLES[kind])
        prog_ids = xdp_prog_ids(left)
        assert (len(prog_ids) == 4) == (kind == "xdp")
        workers = children(proc.pid)
        assert workers
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert namespaces_of(proc.pid) == sorted(left)  # a SIGKILL gives no chance to clean up
    nxt = subprocess.run([str(BIN / "latscope"), "run", "--topology", kind, "--count", "300", "--period", "1ms",
                          "--quiet"], env=env, capture_output=True, text=True, timeout=180, check=False)
    assert nxt.returncode == 0, nxt.stderr
    assert_nothing_left(proc.pid, before, prog_ids)
    for w in workers:
        assert not Path(f"/proc/{w}").exists() or "latscope" not in Path(f"/proc/{w}/cmdline").read_text()


@pytest.mark.serial  # another test's run would reap the dead pid's leftovers it plants
def test_unbuildable_topology_is_refused_before_anything_is_made(latscope, results: Path) -> None:
    """ovs (no openvswitch module here): exit 2 with the reason; no namespace made, none reaped, nothing stored."""
    reason = available("ovs")
    assert reason is not None and "openvswitch" in reason.lower()
    dead = dead_pid_namespace()
    try:
        r = latscope("run", "--topology", "ovs", "--count", "10")
        assert r.returncode == 2
        assert r.stderr.strip() == f"latscope: error: --topology ovs: {reason}"
        # Not even the reaping of dead runs' namespaces happened: the refusal came first.
        assert dead in netns.owned()
        assert list(results.iterdir()) == []
    finally:
        netns.remove(dead)


def dead_pid_namespace() -> str:
    from tests.unit.store.test_staging_reap import dead_pid

    name = netns.name(str(dead_pid()), "tx")
    netns.create(name)
    return name


def test_doctor_lists_every_topology() -> None:
    """doctor --json: every topology with whether it can be built here and why not; the text says the same."""
    proc = subprocess.Popen([str(BIN / "latscope"), "doctor", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    doc = json.loads(out)
    topo = doc["topologies"]
    assert list(topo) == list(TOPOLOGIES)
    for kind in ("veth", "loopback", *HOST_PATHS):
        assert topo[kind] == {"available": True, "reason": None}, kind
    assert topo["ovs"]["available"] is False and topo["ovs"]["reason"] == available("ovs")
    check = {c["name"]: c for c in doc["checks"]}["topologies"]
    assert "xdp" in check["found"] and "ovs: " in check["meaning"]
    assert any(line.startswith("--topology ovs: ") for line in doc["verdict"]["cannot"])
    # the scratch namespace of its checks is gone (other tests' runs may be making theirs right now)
    assert netns.name(str(proc.pid), "check") not in netns.owned()
