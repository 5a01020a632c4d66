"""Streams through a QEMU guest: every packet carried, both directions, what a VM run records."""

from __future__ import annotations

import json

import pytest

from latscope.probe.config import MeasureConfig
from latscope.session import measure_all
from latscope.store.layout import ResultsStore
from latscope.store.samples import FLAG_LOST
from latscope.topo.vm.topology import vm_path

pytestmark = [pytest.mark.root, pytest.mark.vm]


def _lost(out) -> str:
    """Where packets were lost, for a failure message: seq ranges and how the receiver stopped."""
    cols = out.run.samples()
    seqs = cols["seq"][(cols["flags"] & FLAG_LOST) != 0]
    return f"lost seqs {list(seqs[:10])}...{list(seqs[-5:])}, capture {out.run.record.extra.get('capture')}"


def _measure(vm_guest, tmp_path, **cfg):
    store = ResultsStore(tmp_path / "results")
    return measure_all(MeasureConfig(topology="vm", **cfg), store, path=vm_path(vm_guest))


def test_forward_carries_every_packet_and_records_the_vm(vm_guest, tmp_path) -> None:
    """Host -> guest over tap+bridge: all packets arrive; run.json names QEMU, its threads, the clock bound."""
    (out,) = _measure(vm_guest, tmp_path, count=1500, name="fwd")
    pk = out.summary["packets"]
    assert (pk["sent"], pk["received"], pk["lost"], pk["foreign"]) == (1500, 1500, 0, 0), _lost(out)
    vm = out.run.record.extra["vm"]
    assert vm["accel"] == "tcg" and vm["emulated_cpu"] is True
    assert vm["direction"] == "forward"
    assert vm["qemu"]["argv"][0].endswith("qemu-system-x86_64") and vm["qemu"]["version"]
    roles = {t["role"] for t in vm["threads"]}
    assert {"vcpu", "main"} <= roles
    assert vm["guest_kernel"] and vm["network"]["variant"] == "bridge"
    clock = out.summary["clock"]
    assert clock["corrected_side"] == "receiver" and clock["uncertainty_ns"] > 0
    # The guest's environment was collected by the guest (its own kernel, not the host's).
    assert out.run.record.environment["guest"]["kernel"]["release"] == vm["guest_kernel"]
    cols = out.run.samples()
    assert int((cols["rx_user_ns"] >= cols["rx_sw_ns"]).sum()) == 1500


def test_reverse_is_sent_by_the_guest_and_reports_missed_periods(vm_guest, tmp_path) -> None:
    """Guest -> host: all packets arrive; the guest sender's schedule is accounted for, missed periods counted."""
    (out,) = _measure(vm_guest, tmp_path, count=800, direction="reverse")
    pk = out.summary["packets"]
    assert (pk["sent"], pk["received"], pk["lost"]) == (800, 800, 0), _lost(out)
    assert out.summary["clock"]["corrected_side"] == "sender"
    sched = out.summary["schedule"]
    assert sched["scheduled"] == 800 and 0 <= sched["missed_periods"] <= 800
    cols = out.run.samples()
    late = (cols["wake_ns"] - cols["sched_ns"]) >= 1_000_000
    assert int(late.sum()) == sched["missed_periods"]


def test_both_directions_at_once_store_two_linked_runs(vm_guest, tmp_path) -> None:
    """--direction both: two streams with distinct ids at the same time, one run each, each complete."""
    outs = _measure(vm_guest, tmp_path, count=800, direction="both", name="dual")
    assert [o.run.record.config["direction"] for o in outs] == ["forward", "reverse"]
    assert [o.run.record.name for o in outs] == ["dual-forward", "dual-reverse"]
    streams = {o.run.record.config["stream"] for o in outs}
    assert len(streams) == 2
    for o in outs:
        assert o.summary["packets"]["received"] == 800, _lost(o)
        assert o.run.record.extra["vm"]["siblings"] == [x.run.run_id for x in outs if x is not o]
    # The two streams overlapped in time (they ran at once, not one after the other).
    spans = [(int(o.run.samples()["sched_ns"].min()), int(o.run.samples()["sched_ns"].max())) for o in outs]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]


def test_clock_estimate_finds_an_offset_set_on_purpose(vm_guest) -> None:
    """Step the guest clock by a known amount: the estimate moves by that amount, within its own bounds."""
    link = vm_guest.link
    before = link.exchange(64)
    skew = 37_000_000  # 37 ms
    link.request("step", delta_ns=skew)
    try:
        after = link.exchange(64)
    finally:
        link.request("step", delta_ns=-skew)
    moved = after.offset_ns - before.offset_ns
    # The step itself takes a few guest microseconds between reading and setting the clock.
    slack = before.uncertainty_ns + after.uncertainty_ns + 200_000
    assert abs(moved - skew) <= slack, (moved, skew, before, after)
    restored = link.exchange(32)
    assert abs(restored.offset_ns - before.offset_ns) <= before.uncertainty_ns + restored.uncertainty_ns + 200_000


def test_cli_json_of_a_vm_run_keeps_the_vm_facts(vm_guest, tmp_path, latscope) -> None:
    """`show --json` of a VM run gives the clock and schedule facts the run stored."""
    (out,) = _measure(vm_guest, tmp_path, count=300)
    res = latscope("show", str(out.run.path), "--json", use_results=False)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["packets"]["received"] == 300
    assert doc["clock"]["uncertainty_ns"] == out.summary["clock"]["uncertainty_ns"]
    assert doc["vm"]["accel"] == "tcg" and doc["config"]["vm"]["accel"] == "tcg"
    text = latscope("show", str(out.run.path), use_results=False).stdout
    assert "vm: host -> guest over bridge, tcg" in text and "clock: guest minus host" in text
