"""Host steal: /proc/stat parsing, the sampler and its bounded memory, the series file, VM detection."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from latscope.env import virt
from latscope.env.doctor import virt_check
from latscope.env.roots import Roots
from latscope.env.steal import (
    StealCapture,
    StealSampler,
    StealSeries,
    parse_stat,
    read_series,
    write_series,
)
from latscope.errors import FormatError
from latscope.report.text import steal_line

STAT = b"""cpu  1598439 787 367478 452231 9189 0 10412 14092 0 0
cpu0 770326 445 183720 256817 2899 0 4483 7014 0 0
cpu1 828113 341 183757 195413 6290 0 5928 7078 0 0
intr 21986587 0 0
ctxt 1
"""


def stat_file(tmp_path: Path, steal: tuple[int, int]) -> Path:
    p, tmp = tmp_path / "stat", tmp_path / "stat.new"
    tmp.write_bytes(STAT.replace(b"7014", str(steal[0]).encode()).replace(b"7078", str(steal[1]).encode()))
    tmp.replace(p)  # the sampler reads concurrently: never a half-written file
    return p


def test_parse_stat_reads_the_steal_column_of_each_cpu_in_ns() -> None:
    """The 8th number of each cpuN line, ticks of USER_HZ turned into ns; the total line is not a CPU."""
    assert parse_stat(STAT, 100) == {0: 70_140_000_000, 1: 70_780_000_000}
    assert parse_stat(b"cpu0 1 2 3 4\n", 100) == {0: 0}  # an old kernel without the column


def test_series_growth_brackets_the_window_and_refuses_outside_it() -> None:
    ts = np.arange(0, 100, 10, dtype=np.int64)
    vals = np.stack([np.zeros(10, np.int64), np.r_[np.zeros(5), np.full(5, 10)].astype(np.int64)], axis=1)
    s = StealSeries(ts, (0, 1), vals)
    assert s.grew(1, 41, 49) == 10 and s.grew(1, 50, 60) == 0 and s.grew(0, 0, 90) == 0
    assert s.grew(1, 31, 35) == 0 and s.grew(1, 31, 35, lag_ns=10) == 10  # accounted a tick later
    assert s.grew(1, -1, 20) is None and s.grew(1, 10, 91) is None and s.grew(5, 10, 20) is None
    summ = s.summary()
    assert summ["window_s"] == 0.0 and summ["cpus"]["1"] == {"steal_ns": 10, "percent": round(1000 / 90, 2)}


def test_sampler_follows_the_file_and_bounds_its_memory(tmp_path: Path) -> None:
    """Every sample is the file's value at that moment; past max_samples it thins itself, keeping both ends."""
    path = stat_file(tmp_path, (0, 0))
    smp = StealSampler(interval_ns=1_000_000, stat=path, max_samples=8)
    smp.start()
    for k in range(1, 30):
        stat_file(tmp_path, (k, 2 * k))
        time.sleep(0.002)  # let the sampler see a few values (not a readiness wait: any count of samples works)
    stat_file(tmp_path, (100, 200))
    s = smp.stop()
    assert 2 <= len(s) <= 8 and s.cpus == (0, 1)
    assert s.steal_ns[0].tolist() == [0, 0] and s.steal_ns[-1].tolist() == [1_000_000_000, 2_000_000_000]
    assert (np.diff(s.ts_ns) > 0).all() and (np.diff(s.steal_ns, axis=0) >= 0).all()
    assert smp.interval_ns >= 1_000_000 and smp.error is None


def test_series_file_round_trip_and_bad_files(tmp_path: Path) -> None:
    s = StealSeries(np.array([5, 15], np.int64), (0, 3), np.array([[1, 2], [3, 4]], np.int64))
    write_series(s, tmp_path / "steal.parquet", 10)
    back = read_series(tmp_path / "steal.parquet")
    assert back.cpus == (0, 3) and back.ts_ns.tolist() == [5, 15] and back.steal_ns.tolist() == [[1, 2], [3, 4]]
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(FormatError):
        read_series(tmp_path / "bad.parquet")


def test_capture_without_proc_stat_records_the_error(tmp_path: Path) -> None:
    """No /proc/stat: the run goes on, run.json says why there is no steal series."""
    cap = StealCapture(stat=tmp_path / "absent")
    assert cap.start(tmp_path, None) == {}
    res = cap.stop(tmp_path)
    assert "cannot read" in res["record"]["host_steal"]["error"] and not (tmp_path / "steal.parquet").exists()
    cap.close()


def test_capture_stores_what_proc_stat_said(tmp_path: Path) -> None:
    path = stat_file(tmp_path, (10, 20))
    cap = StealCapture(stat=path)
    cap.start(tmp_path, None)
    stat_file(tmp_path, (10, 70))
    res = cap.stop(tmp_path)
    cap.close()
    s = read_series(tmp_path / "steal.parquet")
    assert res["record"]["host_steal"]["samples"] == len(s) >= 2
    assert res["summary"]["host_steal"]["cpus"]["1"]["steal_ns"] == 500_000_000
    assert res["summary"]["host_steal"]["cpus"]["0"]["steal_ns"] == 0


def test_steal_line_only_when_the_host_took_time() -> None:
    zero = {"cpus": {"0": {"steal_ns": 0, "percent": 0.0}, "1": {"steal_ns": 0, "percent": 0.0}}}
    assert steal_line(zero) is None and steal_line(None) is None
    some = {"cpus": {"1": {"steal_ns": 5, "percent": 0.01}, "0": {"steal_ns": 9, "percent": 12.345}}}
    assert steal_line(some) == "  host steal: 12.3% of CPU 0, <0.1% of CPU 1 during the run"


def test_virt_facts_and_doctor(tmp_path: Path) -> None:
    proc, sys_ = tmp_path / "proc", tmp_path / "sys"
    proc.mkdir()
    (sys_ / "class" / "dmi" / "id").mkdir(parents=True)
    (proc / "cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu vme sse2\n")
    (proc / "stat").write_bytes(STAT.replace(b"7014", b"0").replace(b"7078", b"0"))
    roots = Roots(proc=proc, sys=sys_, dev=tmp_path, tracefs=tmp_path)
    bare = virt.collect(roots)
    assert not bare["is_vm"] and virt_check(bare).status == "ok"
    (sys_ / "class" / "dmi" / "id" / "sys_vendor").write_text("QEMU\n")
    quiet = virt.collect(roots)
    assert quiet["is_vm"] and quiet["steal_ns_since_boot"] == 0
    assert "may not report steal" in virt_check(quiet).found
    (proc / "cpuinfo").write_text("flags\t\t: fpu hypervisor\n")
    (proc / "stat").write_bytes(STAT)
    stealing = virt.collect(roots)
    assert stealing["evidence"][0] == "cpuid hypervisor flag" and "reports steal" in virt_check(stealing).found


def test_the_sampling_thread_carries_its_own_name_in_the_kernel_and_yields_its_cpu() -> None:
    """A trace (and so a breakdown's culprit list) shows the sampler as latscope-steal, not as latscope,
    and it runs at nice 19 (below the probes, yet not starved as under SCHED_IDLE); the caller's thread
    keeps its own priority."""
    import os

    from latscope.env.steal import StealSampler

    def threads() -> dict[str, int]:
        out = {}
        for t in os.listdir("/proc/self/task"):
            try:
                stat = (Path("/proc/self/task") / t / "stat").read_text()
            except OSError:
                continue  # a thread that ended meanwhile
            comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            out[comm] = int(rest[16])  # field 19 of proc(5), nice
        return out

    before = os.getpriority(os.PRIO_PROCESS, 0)
    sampler = StealSampler()
    sampler.start()
    try:
        # the thread names itself as it starts, which a loaded machine may take a while to let it do
        deadline = time.monotonic() + 10
        while threads().get("latscope-steal") != 19 and time.monotonic() < deadline:
            time.sleep(0.01)
        seen = threads()
    finally:
        sampler.stop()
    assert seen.get("latscope-steal") == 19 and sampler.policy == "nice 19", seen
    assert os.getpriority(os.PRIO_PROCESS, 0) == before != 19
