"""Traced runs through a QEMU guest: both kernels recorded, and the seed's case explained by QEMU's threads.

The seed's case: the guest's working directory (and stream log) on an ext4
virtio-blk disk served by an IO thread pinned to the vCPU thread's CPU, and a
paced disk writer in the guest, so QEMU's IO and worker threads compete with
the vCPU thread. Whatever the breakdown says about them is checked against
the raw sched_switch records of the host trace (tests/vmtruth.py), never by
rank: the machine is shared and its load decides who ranks first.

One guest is booted for the module (its options differ from the shared VM
fixture's: disk, IO thread, pinning).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from latscope.store.samples import MISSING
from latscope.trace import tracefs
from latscope.trace.breakdown import Options
from latscope.trace.table import read_table
from latscope.trace.vmbreakdown import analyse_vm_run
from latscope.trace.vmpath import FORWARD, REVERSE
from tests.integration.vm.conftest import vm_unavailable as vm_can_not_boot
from tests.vmtruth import explained_stages, overlap, preempted_by, stage_windows

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.vm, pytest.mark.timeout(1200)]

VCPU_STAGES = {n for n, r, d in zip(FORWARD.names, FORWARD.roles, FORWARD.domains, strict=True) if r == "vcpu" or d == "guest"}


def vm_unavailable() -> str | None:
    """Why the seed's case cannot run here: a VM cannot boot, or there is no CPU 1 to pin to."""
    why = vm_can_not_boot()
    if why is None and (len(os.sched_getaffinity(0)) < 2 or 1 not in os.sched_getaffinity(0)):
        why = "the seed's case pins the vCPU and IO threads to CPU 1"
    return why


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A traced forward run in the seed's set-up with a guest disk writer, and a traced reverse run."""
    why = vm_unavailable()
    if why:
        pytest.skip(why)
    from latscope.cli.run import trace_captures
    from latscope.probe.config import MeasureConfig
    from latscope.remote.guestload import GuestDiskLoad
    from latscope.session import measure_all
    from latscope.store.layout import ResultsStore
    from latscope.topo.vm.options import VmOptions
    from latscope.topo.vm.topology import vm_topology

    store = ResultsStore(tmp_path_factory.mktemp("vmtrace") / "results")
    opts = VmOptions(accel="tcg", cwd="ext4", iothread=True, affinity="vcpu=1,io=1", clock_samples=100)
    with vm_topology(opts) as path:
        cfg = MeasureConfig(topology="vm", count=500, stream_log=True, name="seed")
        load = GuestDiskLoad(max_bytes=512 << 20, max_s=240, block=16 << 10, sync_every=2, rate=1 << 20)
        (fwd,) = measure_all(cfg, store, path=path, captures=(load,) + trace_captures(True, None, cfg, True))
        rcfg = MeasureConfig(topology="vm", count=300, direction="reverse", name="seed-reverse")
        (rev,) = measure_all(rcfg, store, path=path, captures=trace_captures(True, None, rcfg, True))
    for run, count in ((fwd, 500), (rev, 300)):
        assert run.summary["packets"]["received"] >= 0.9 * count, run.summary["packets"]
    yield store, fwd, rev


def _breakdown(run, threshold_ns=None):
    return analyse_vm_run(run.path, run.record.extra, run.samples(), Options(threshold_ns=threshold_ns),
                          run_id=run.run_id)


def test_both_kernels_are_recorded(runs) -> None:
    """trace/ holds the host's and the guest's trace; the host's shows QEMU's threads and the tap, the
    guest's the guest receiver's markers; run.json says how to map the guest's clock."""
    _store, fwd, _rev = runs
    tdir = fwd.run.path / "trace"
    for name in ("ring.zst", "ring.json", "events.parquet", "guest.txt.zst", "guest-events.parquet"):
        assert (tdir / name).stat().st_size > 0, name
    extra = fwd.run.record.extra
    gt = extra["guest_trace"]
    assert gt["clock"] == "tai" and isinstance(gt["to_realtime_ns"], int) and "error" not in gt
    assert not any(e.startswith("kvm:") for e in gt["events"])
    assert "guest_trace_overruns" in fwd.run.record.completeness
    assert extra["guest_load"]["written_bytes"] > 0
    vcpu = next(t["tid"] for t in extra["vm"]["threads"] if t["role"] == "vcpu")
    assert vcpu in {t["tid"] for t in gt["qemu_threads"]}
    host = read_table(tdir / "events.parquet")
    sw = host.rows("sched_switch")
    assert ((host.nums[sw, 0] == vcpu) | (host.nums[sw, 1] == vcpu)).sum() > 100
    wake = host.rows("sched_waking", "sched_wakeup")
    assert (host.nums[wake, 0] == vcpu).sum() > 10
    tap = next(d for d in extra["vm"]["network"]["devices"] if d.endswith("tap"))
    xmit = host.rows("net_dev_xmit")
    assert (host.strs[xmit, 0] == host.string_id(tap)).sum() >= 0.9 * fwd.summary["packets"]["received"]
    guest = read_table(tdir / "guest-events.parquet")
    marks = guest.rows("print")
    assert len(marks) >= 0.9 * fwd.summary["packets"]["received"]


def test_seed_case_names_qemu_threads_as_the_raw_records_show(runs) -> None:
    """Late packets (above the median) name QEMU's IO or worker threads for keeping the vCPU thread off its
    CPU, and each such claim is backed by the raw switches within the packet's window, for that long."""
    _store, fwd, _rev = runs
    samples = fwd.run.samples()
    e2e = (samples["rx_user_ns"] - samples["sched_ns"])[samples["rx_user_ns"] != MISSING]
    bd = _breakdown(fwd.run, int(np.percentile(e2e, 50)))
    assert bd.model is FORWARD and bd.vm["clock"] is not None
    host = bd.timeline.table
    threads = {t["tid"]: t for t in bd.vm["threads"]}
    vcpu = next(tid for tid, t in threads.items() if t["role"] == "vcpu")
    helpers = [tid for tid, t in threads.items() if t["role"] in ("iothread", "worker")]
    truth = {tid: preempted_by(host, vcpu, tid) for tid in helpers}
    pk = bd.packets_detail
    index = {int(s): i for i, s in enumerate(pk.seq)}
    named = 0
    for p in bd.late:
        windows = stage_windows(pk.times[index[p.seq]], FORWARD.names, explained_stages(p, VCPU_STAGES))
        for tid in helpers:
            claims = [c for c in p.culprits if c.pid == tid and c.victim.startswith("vCPU thread")]
            seen = overlap(truth[tid], windows)
            for c in claims:
                named += 1
                assert c.kind == "qemu" and c.name == threads[tid]["label"]
                # The raw records must show the thread on the vCPU's CPU while the vCPU waited. The model
                # may claim somewhat more than they show: it places switches the trace lost where the
                # preemption happened (trace/model.py), which the raw records cannot show by definition.
                assert seen > 0, (p.seq, threads[tid]["label"], c.ns, "named without any raw evidence")
                assert 0 < c.ns <= seen * 1.5 + 100_000, (p.seq, threads[tid]["label"], c.ns, seen)
            if seen >= 2_000:
                assert claims, (p.seq, threads[tid]["label"], seen)
    assert named > 0, "no late packet named QEMU's IO or worker threads"
    assert any(r["name"].startswith(("QEMU IO thread", "QEMU worker")) for r in bd.vm["vcpu_preemption"])


def test_reverse_run_is_followed_from_guest_to_host(runs) -> None:
    """Guest -> host: the guest's send path and the host's receive path are both found; stages add up."""
    _store, _fwd, rev = runs
    bd = _breakdown(rev.run, 0)
    pk = bd.packets_detail
    assert bd.model is REVERSE
    have = pk.times != MISSING
    n = len(pk.seq)
    for k in (2, 3, 4, 6, 7, 11):
        assert have[:, k].sum() >= 0.9 * n, REVERSE.names[k - 1]
    whole = have[:, 0] & have[:, -1]
    np.testing.assert_allclose(np.nansum(pk.durations()[whole], axis=1), pk.times[whole, -1] - pk.times[whole, 0])


def test_nothing_is_left_in_the_host_tracefs(runs) -> None:
    """The host's trace instances of this process are gone after the runs."""
    root = tracefs.find_tracefs()
    assert not [n for n in tracefs.owned(root) if n.startswith(f"{tracefs.PREFIX}{os.getpid()}-")]
