"""The breakdown across a hypervisor on a recorded VM run (tests/fixtures/trace/vm-run, capture_vm_fixture.py).

The fixture is 150 ms of a host -> guest run through a TCG guest in the seed's
set-up (ext4 virtio-blk disk served by an IO thread pinned with the vCPU
thread, a disk writer in the guest): the host's and the guest's trace text,
the samples of the 149 packets inside the window, and run.json as recorded.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from latscope.store.layout import ResultsStore, StoredRun
from latscope.store.samples import MISSING
from latscope.trace import guestclock, qemuthreads
from latscope.trace.breakdown import Breakdown, Options
from latscope.trace.parse_text import parse_kernel_text
from latscope.trace.perfetto import document
from latscope.trace.report import to_json, to_text
from latscope.trace.vmbreakdown import analyse_vm, analyse_vm_run, load_guest_table
from latscope.trace.vmpath import FORWARD, REVERSE
from tests.vmtruth import explained_stages, overlap, preempted_by, stage_windows

from .conftest import FIXTURES

VM_RUN = FIXTURES / "vm-run"
#: Stages whose culprits include the host's view of the vCPU thread.
VCPU_STAGES = {n for n, r, d in zip(FORWARD.names, FORWARD.roles, FORWARD.domains, strict=True) if r == "vcpu" or d == "guest"}


@pytest.fixture(scope="module")
def vm_run(tmp_path_factory) -> StoredRun:
    root = tmp_path_factory.mktemp("results")
    shutil.copytree(VM_RUN, root / VM_RUN.name)
    return ResultsStore(root).resolve(str(root / VM_RUN.name))


@pytest.fixture(scope="module")
def bd(vm_run) -> Breakdown:
    """Every packet of the fixture broken down (threshold 0: all are 'late')."""
    return analyse_vm_run(vm_run.path, vm_run.record.extra, vm_run.samples(), Options(threshold_ns=0),
                          run_id=vm_run.run_id)


def test_checkpoints_are_found_on_both_sides_and_in_order(bd) -> None:
    """Host send, tap, QEMU's read and the guest's receive are found for (nearly) every packet, in time order."""
    pk = bd.packets_detail
    assert pk.model is FORWARD and bd.model is FORWARD
    have = pk.times != MISSING
    n = len(pk.seq)
    for k in (2, 3, 4, 7, 10, 11, 14, 15):
        assert have[:, k].sum() >= 0.95 * n, FORWARD.names[k - 1]
    t = pk.times.astype(np.float64)
    t[~have] = np.nan
    for i in range(n):
        seen = t[i][~np.isnan(t[i])]
        assert np.all(np.diff(seen) >= 0)


def test_host_checkpoints_are_the_events_they_claim(bd, vm_run) -> None:
    """C4 is the tap's transmit of the packet's skb, C7 a copy of the same skb by this QEMU's main loop."""
    host = bd.timeline.table
    pk = bd.packets_detail
    vm = vm_run.record.extra["vm"]
    tap = next(d for d in vm["network"]["devices"] if d.endswith("tap"))
    main = vm["qemu"]["pid"]
    for i in np.flatnonzero((pk.rows[:, 4] >= 0) & (pk.rows[:, 7] >= 0))[:50]:
        c3, c4, c7 = pk.rows[i, 3], pk.rows[i, 4], pk.rows[i, 7]
        assert host.event_names[host.event[c4]] == "net_dev_xmit" and host.string(int(host.strs[c4, 0])) == tap
        assert host.event_names[host.event[c7]] == "skb_copy_datagram_iovec" and int(host.pid[c7]) == main
        assert host.nums[c3, 0] == host.nums[c4, 0] == host.nums[c7, 0]


def test_stages_add_up_to_the_metric(bd) -> None:
    """Every packet's stages sum to rx_user - sched, which is the breakdown's e2e value."""
    pk = bd.packets_detail
    d = pk.durations()
    whole = (pk.times[:, 0] != MISSING) & (pk.times[:, -1] != MISSING)
    assert whole.sum() > 100
    np.testing.assert_allclose(np.nansum(d[whole], axis=1), (pk.times[whole, -1] - pk.times[whole, 0]), atol=1)
    by_seq = {p.seq: p.value_ns for p in bd.late}
    for i in np.flatnonzero(whole)[:40]:
        assert by_seq[int(pk.seq[i])] == pytest.approx(float(pk.times[i, -1] - pk.times[i, 0]), abs=1)


def test_guest_trace_is_fitted_inside_the_exchange_bound(bd, vm_run) -> None:
    """The guest clock is refined by the vCPU fit, within the exchange's hard bound and far tighter than it."""
    ck = bd.vm["clock"]
    assert ck["method"] == "vcpu-fit" and ck["fit"] >= guestclock.MIN_FIT
    assert abs(ck["correction_ns"]) <= ck["exchange_uncertainty_ns"]
    assert ck["uncertainty_ns"] < ck["exchange_uncertainty_ns"] / 5
    assert ck["exchange_offset_ns"] == vm_run.record.extra["vm"]["clock"]["before"]["offset_ns"]


def test_fit_finds_a_planted_correction() -> None:
    """Events planted inside known run intervals and shifted by 37 us are put back by -37 us +- the step."""
    rng = np.random.default_rng(7)
    starts = np.cumsum(rng.integers(100_000, 300_000, 400)).astype(np.int64)
    ends = starts + rng.integers(20_000, 80_000, 400)
    pick = rng.integers(0, 400, 5000)
    events = starts[pick] + (rng.random(5000) * (ends[pick] - starts[pick])).astype(np.int64)
    corr, half, fit, _fit0, used = guestclock.fit_correction([np.sort(events) + 37_000], [(starts, ends)], 500_000)
    assert used == 5000 and fit == pytest.approx(1.0)
    assert abs(corr - 37_000) <= half <= 20_000


def test_qemu_threads_are_known_by_id_and_role(bd, vm_run) -> None:
    """The run's QEMU threads carry roles; the other QEMU on the host (same names, other ids) is not ours."""
    threads = {t["tid"]: t for t in bd.vm["threads"]}
    vm = vm_run.record.extra["vm"]
    assert threads[vm["qemu"]["pid"]]["label"] == "QEMU main loop"
    assert any(t["label"] == "QEMU IO thread IO io0" for t in threads.values())
    assert any(t["role"] == "vcpu" and t["label"] == "vCPU thread CPU 0/TCG" for t in threads.values())
    host = bd.timeline.table
    foreign = set(qemuthreads.comm_tids(host, "worker").tolist()) - set(threads)
    culprit_pids = {c.pid for p in bd.late for c in p.culprits if c.kind == "qemu"}
    assert not culprit_pids & foreign


def test_new_threads_of_qemu_are_added_from_the_trace() -> None:
    """A worker created by a known QEMU thread joins the map under the name it then runs with; others do not."""
    text = b"""\
 qemu-system-x86-100   [000] d..2. 10.000001: sched_wakeup_new: comm=qemu-system-x86 pid=150 prio=120 target_cpu=001
          worker-150   [001] d..2. 10.000050: sched_switch: prev_comm=worker prev_pid=150 prev_prio=120 prev_state=S ==> next_comm=swapper/1 next_pid=0 next_prio=120
 qemu-system-x86-900   [000] d..2. 10.000060: sched_wakeup_new: comm=qemu-system-x86 pid=950 prio=120 target_cpu=001
          worker-950   [001] d..2. 10.000070: sched_switch: prev_comm=worker prev_pid=950 prev_prio=120 prev_state=S ==> next_comm=swapper/1 next_pid=0 next_prio=120
"""
    table = parse_kernel_text(text)
    vm = {"qemu": {"pid": 100}, "threads": [{"tid": 100, "name": "qemu-system-x86"}, {"tid": 101, "name": "CPU 0/TCG"}]}
    th = qemuthreads.from_run(vm, None, table)
    assert th.role(150) == "worker" and th.label(150) == "QEMU worker thread"
    assert 950 not in th and th.vcpu_of_guest_cpu() == {0: [101]}


def test_io_thread_culprits_agree_with_the_raw_switch_records(bd, vm_run) -> None:
    """Where the IO thread is named for the vCPU thread, the raw records show it on the vCPU's CPU while the
    vCPU thread was runnable, for at least that long; where they show that, it is named."""
    host = bd.timeline.table
    threads = {t["tid"]: t for t in bd.vm["threads"]}
    io = next(tid for tid, t in threads.items() if t["role"] == "iothread")
    vcpu = next(tid for tid, t in threads.items() if t["role"] == "vcpu")
    truth = preempted_by(host, vcpu, io)
    assert truth, "the fixture was cut around IO-thread preemptions"
    pk = bd.packets_detail
    index = {int(s): i for i, s in enumerate(pk.seq)}
    named = 0
    for p in bd.late:
        times = pk.times[index[p.seq]]
        io_c = [c for c in p.culprits if c.pid == io and c.victim.startswith("vCPU thread")]
        windows = stage_windows(times, FORWARD.names, explained_stages(p, VCPU_STAGES))
        seen = overlap(truth, windows)
        for c in io_c:
            named += 1
            assert c.name == "QEMU IO thread IO io0" and c.kind == "qemu" and c.where == "host"
            assert 0 < c.ns <= seen * 1.05 + 20_000, (p.seq, c.ns, seen)
        if seen >= 2_000:
            assert io_c, (p.seq, seen)
    assert named > 0


def test_without_the_guest_trace_the_guest_stages_fold(vm_run) -> None:
    """No guest trace: the guest's stages are not seen, the stages still add up, the report says why."""
    from latscope.trace.breakdown import load_run_table

    extra = vm_run.record.extra
    host = load_run_table(vm_run.path, extra["trace"]).with_meta(to_realtime_ns=0)
    bd = analyse_vm(host, None, vm_run.samples(), extra["vm"], None, Options(threshold_ns=0),
                    guest_missing="the run has no guest trace")
    pk = bd.packets_detail
    assert (pk.times[:, 10:15] == MISSING).all()
    whole = (pk.times[:, 0] != MISSING) & (pk.times[:, -1] != MISSING)
    np.testing.assert_allclose(np.nansum(pk.durations()[whole], axis=1), pk.times[whole, -1] - pk.times[whole, 0])
    assert any("no guest trace" in w and "fold" in w for w in bd.warnings)
    assert bd.vm["guest_trace"] is None and bd.vm["clock"] is None


def test_guest_table_reads_the_text_when_the_table_is_missing(vm_run) -> None:
    """The fixture has only the text; its clock facts come from run.json."""
    table, why = load_guest_table(vm_run.path, vm_run.record.extra["guest_trace"])
    assert why is None and len(table) > 1000
    assert table.meta["to_realtime_ns"] == vm_run.record.extra["guest_trace"]["to_realtime_ns"]


def test_reports_speak_of_qemu_threads(bd) -> None:
    """Text in the seed's words, JSON with the VM model and clock, Perfetto with the guest's CPUs."""
    text = to_text(bd, top=3)
    assert "vCPU thread CPU 0/TCG runnable, preempted by QEMU IO thread IO io0 for" in text
    assert "guest trace:" in text and "vCPU fit" in text and "QEMU reads tap" in text
    doc = json.loads(json.dumps(to_json(bd)))
    assert doc["stage_model"] == "vm-forward" and [s["name"] for s in doc["stages"]] == list(FORWARD.names)
    assert doc["vm"]["clock"]["method"] == "vcpu-fit"
    assert any(r["name"] == "QEMU IO thread IO io0" for r in doc["vm"]["vcpu_preemption"])
    assert {c["where"] for p in doc["late_packets"] for c in p["culprits"]} <= {"host", "guest"}
    ev = document(bd)["traceEvents"]
    assert any(e.get("args", {}).get("name") == "Guest CPUs" for e in ev if e["ph"] == "M")


def test_reverse_model_has_guest_stages_first() -> None:
    """Guest -> host: the guest's stages come first, the host's after QEMU writes the tap."""
    assert REVERSE.domains[:4] == ("guest",) * 4 and set(REVERSE.domains[4:]) == {"host"}
    assert REVERSE.names.index("tap_write") < REVERSE.names.index("rx_stack")


def test_cli_breaks_down_a_vm_run(vm_run, latscope, tmp_path) -> None:
    """`latscope breakdown RUN` picks the VM analysis from run.json; text, --json and --perfetto work."""
    out = tmp_path / "vm.json"
    r = latscope("breakdown", str(vm_run.path), "--threshold", "1us", "--json", "--perfetto", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["stage_model"] == "vm-forward" and doc["late_broken_down"] > 100
    assert json.loads(out.read_text())["traceEvents"]
    r = latscope("breakdown", str(vm_run.path), "--top", "1")
    assert r.returncode == 0 and "QEMU threads:" in r.stdout and "guest NET_RX" in r.stdout


def test_latency_metric_keeps_to_its_span_across_the_hypervisor(vm_run) -> None:
    """Judged on latency (host send call to the guest's receive timestamp, the guest side moved by the
    clock fit like the guest trace): every packet's dominant stage and every stage a culprit is named in
    lie inside that span; the guest receiver's own stages after the timestamp never do."""
    lat = analyse_vm_run(vm_run.path, vm_run.record.extra, vm_run.samples(), Options(metric="latency", threshold_ns=0),
                         run_id=vm_run.run_id)
    assert lat.metric == "latency" and len(lat.late) >= 100
    for p in lat.late:
        inside = {s.name for s in p.stages if s.in_metric}
        assert p.dominant_stage in inside, p.seq
        named = {name for c in p.culprits if c.stage for name in c.stage.split(",")}
        assert named <= inside, (p.seq, named - inside)
        assert not inside & {"sender_wakeup", "guest_runqueue", "guest_recv_return", "user_space"}, p.seq
    assert sum("tap_read" in {s.name for s in p.stages if s.in_metric} for p in lat.late) >= 0.9 * len(lat.late)


def test_latency_metric_leaves_out_a_migration_before_the_send_call(vm_run, tmp_path) -> None:
    """The sender of seq 68 planted moving CPU between its wakeup and its send call: e2e names the move,
    latency (which starts at the send call) does not, on the VM path as on one host."""
    import pyarrow as pa

    run = tmp_path / vm_run.path.name
    shutil.copytree(vm_run.path, run)
    with pa.input_stream(str(run / "trace" / "trace.txt.zst"), compression="zstd") as fh:
        text = fh.read().decode()
    at = text.index("latscope tx seq=68\n")
    line_start = text.rindex("\n", 0, at) + 1
    head = text[line_start:at]
    comm_pid, stamp = head.split(" [")[0].strip(), head.split(": ")[0].split()[-1]
    # 10 us before the marker: after the sender's wakeup (wake_ns), before its send call (send_ns)
    sec, frac = stamp.split(".")
    stamp = f"{sec}.{int(frac) - 10:06d}"
    pid = comm_pid.rsplit("-", 1)[1]
    planted = (f"{comm_pid:>22} [000] d..2. {stamp}: sched_migrate_task: comm={comm_pid.rsplit('-', 1)[0]} "
               f"pid={pid} prio=120 orig_cpu=1 dest_cpu=0\n")
    (run / "trace" / "trace.txt.zst").unlink()
    (run / "trace" / "trace.txt").write_text(text[:line_start] + planted + text[line_start:])
    stored = ResultsStore(tmp_path).resolve(str(run))

    def moves(metric: str) -> list[str]:
        bd = analyse_vm_run(stored.path, stored.record.extra, stored.samples(), Options(metric=metric, threshold_ns=0),
                            run_id=stored.run_id)
        (p,) = [p for p in bd.late if p.seq == 68]
        return [c.note for c in p.culprits if c.kind == "migration"]

    assert moves("e2e") == ["moved from CPU 1 to CPU 0"]
    assert moves("latency") == []
