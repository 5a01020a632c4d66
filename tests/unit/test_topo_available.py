"""The BPF programs of the xdp topology, byte for byte; the ovs verdict from module lists; doctor's topology check."""

from __future__ import annotations

import platform
from pathlib import Path

from latscope.env.doctor import INFO, OK, Check, topology_check, verdict
from latscope.topo import bpf
from latscope.topo.available import ovs_reason


def test_redirect_program_is_four_instructions() -> None:
    """mov r1, ifindex; mov r2, 0; call bpf_redirect (23); exit: struct bpf_insn, little-endian."""
    assert bpf.redirect_program(7).hex() == ("b701000007000000" "b702000000000000" "8500000017000000"
                                             "9500000000000000")
    assert bpf.redirect_program(0x01020304)[4:8] == bytes([4, 3, 2, 1])


def test_pass_program_returns_xdp_pass() -> None:
    assert bpf.pass_program().hex() == "b700000002000000" "9500000000000000"


def test_redirect_program_refuses_impossible_ifindex() -> None:
    for bad in (0, -1, 1 << 31):
        try:
            bpf.redirect_program(bad)
        except ValueError:
            continue
        raise AssertionError(f"ifindex {bad} accepted")


def test_ovs_reason_names_the_missing_module(tmp_path: Path) -> None:
    sys_module, modules = tmp_path / "sys", tmp_path / "lib"
    sys_module.mkdir()
    (modules / platform.release()).mkdir(parents=True)
    (modules / platform.release() / "modules.dep").write_text("kernel/net/bridge/bridge.ko:\n")
    assert ovs_reason(sys_module, modules).startswith("no openvswitch module in this kernel")
    (modules / platform.release() / "modules.dep").write_text("kernel/net/openvswitch/openvswitch.ko: nsh.ko\n")
    assert "no Open vSwitch builder" in ovs_reason(sys_module, modules)
    (sys_module / "openvswitch").mkdir()
    (modules / platform.release() / "modules.dep").write_text("")
    assert "no Open vSwitch builder" in ovs_reason(sys_module, modules)


def test_topology_check_and_verdict() -> None:
    reasons = {"veth": None, "bridge": None, "xdp": "needs root (network namespaces)", "ovs": "no openvswitch module"}
    c = topology_check(reasons)
    assert (c.status, c.found) == (INFO, "can build: veth, bridge")
    assert c.meaning == "cannot build: xdp: needs root (network namespaces); ovs: no openvswitch module"
    assert topology_check({"veth": None}).status == OK
    base = [topology_check(reasons)]
    base += [Check("root", OK, ""), Check("timestamps", INFO, ""), Check("etf", OK, "")]
    v = verdict(base, reasons)
    assert "one-way latency across other host paths (--topology bridge)" in v["can"]
    assert "--topology ovs: no openvswitch module" in v["cannot"]
    assert "--topology xdp: needs root (network namespaces)" in v["cannot"]
