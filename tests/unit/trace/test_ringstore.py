"""Storing a page file as events.parquet a slice at a time: the same table as decoding it all at once."""

from __future__ import annotations

import itertools
import os
import struct
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from latscope.errors import TraceError
from latscope.trace import binary, ringstore, stream
from latscope.trace.table import read_table
from tests.unit.trace.test_ringbuf import PAGE, RING, data, page, waking

ADDRS = [0xFFFF888800000000 + 0x100 * k for k in range(7)] + [0]


def kfree(addr: int, reason: int = 3) -> bytes:
    name = b"eth0\0"
    return struct.pack("<HBBiQIi", 2310, 0, 0, 42, addr, reason, (len(name) << 16) | 24) + name


def capture(rng: np.random.Generator, drains: int = 30, shuffle_cpu: int | None = None,
            early_cpu3: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Pages of CPUs 0, 1 and 3 as a streaming reader stores them: every CPU's new pages at each drain.

    Times interleave across CPUs and often tie (a tick of 50 ns); CPU 3 has
    pages only in the last drain, its events from then on (``early_cpu3``: from
    the start of the trace, as if drained late). ``shuffle_cpu``: that CPU's
    events out of time order.
    """
    pages, cpus = [], []
    clock = {0: 1_000_000, 1: 1_000_000, 3: 1_000_000}
    shuffled = False
    for d in range(drains):
        for cpu in (0, 1, 3):
            if cpu == 3 and d < drains - 1:
                continue
            if cpu == 3 and not early_cpu3:
                clock[3] = max(clock[3], min(clock[0], clock[1]))
            for _ in range(int(rng.integers(1 if cpu == 3 else 0, 3))):
                start = clock[cpu]
                body, t = b"", start
                for _k in range(int(rng.integers(1, 40))):
                    step = int(rng.integers(0, 4)) * 50
                    t += step
                    ev = kfree(ADDRS[int(rng.integers(0, len(ADDRS)))]) if rng.random() < 0.5 else \
                        waking(int(rng.integers(1, 5)), b"w%d" % cpu, 120, cpu, who=42 + cpu)
                    body += data(step, ev)
                if shuffle_cpu == cpu and d >= drains // 2 and not shuffled:
                    start -= 10_000   # this page's events come before the CPU's previous page's
                    shuffled = True
                pages.append(page(start, body))
                cpus.append(cpu)
                clock[cpu] = t
    return np.stack(pages), np.asarray(cpus, np.int16)


def write_ring(path: Path, pages: np.ndarray, cpus: np.ndarray) -> stream.RingIndex:
    sink = stream.PageSink(path, PAGE)
    for p, c in zip(pages, cpus, strict=True):
        sink.write(int(c), p.tobytes())
    sink.close()
    return sink.index


def columns(t: binary.EventTable) -> dict[str, np.ndarray]:
    s = np.array([*t.strings, None], dtype=object)
    e = np.array(t.event_names, dtype=object)
    return {"ts": t.ts, "cpu": t.cpu, "pid": t.pid, "comm": s[t.comm], "event": e[t.event], "ctx": t.ctx,
            "nums": t.nums, "s0": s[t.strs[:, 0]], "s1": s[t.strs[:, 1]]}


def assert_same(a: binary.EventTable, b: binary.EventTable) -> None:
    assert len(a) == len(b)
    x, y = columns(a), columns(b)
    for name in x:
        assert np.array_equal(x[name], y[name]), name


@pytest.mark.parametrize("workers", [1, 2])
def test_slices_of_small_chunks_make_the_table_decoded_at_once(tmp_path: Path, workers: int) -> None:
    pages, cpus = capture(np.random.default_rng(3))
    counts = write_ring(tmp_path / "ring.zst", pages, cpus)
    mix = binary.AddressMix(11)
    whole = binary.decode_table(pages, cpus, RING, addresses=mix)
    assert len(np.unique(whole.cpu)) == 3 and len(whole) > 500
    # ties across CPUs (the order between them is CPU, then buffer order)
    tie = np.flatnonzero(np.diff(whole.ts) == 0)
    assert len(tie) > 50 and (whole.cpu[tie] != whole.cpu[tie + 1]).any()
    meta = ringstore.store_ring(tmp_path / "ring.zst", RING, tmp_path / "events.parquet", addresses=mix,
                                index=counts, chunk_pages=5, workers=workers, meta={"clock": "tai"})
    got = read_table(tmp_path / "events.parquet")
    assert_same(got, whole)
    store = meta["store"]
    assert store["streamed"] is True and store["chunks"] == -(-len(pages) // 5) and store["workers"] == workers
    assert got.meta["parse"]["events"] == len(whole) and got.meta["parse"]["pages"] == len(pages)
    assert got.meta["clock"] == "tai" and got.meta["pointers"] == "mixed"
    # written as many row groups, each sorted by time, after the one before
    pf = pq.ParquetFile(tmp_path / "events.parquet")
    assert pf.metadata.num_row_groups > 3
    stats = [pf.metadata.row_group(i).column(0).statistics for i in range(pf.metadata.num_row_groups)]
    assert all(a.max < b.min for a, b in itertools.pairwise(stats))
    # the rows held back waiting for slower CPUs stayed a few chunks' worth
    assert store["max_rows_waiting"] < len(whole) / 3


def test_page_counts_are_counted_when_not_given_and_wrong_ones_cannot_break_the_order(tmp_path: Path) -> None:
    pages, cpus = capture(np.random.default_rng(4), early_cpu3=True)
    counts = write_ring(tmp_path / "ring.zst", pages, cpus)
    assert stream.ring_index(tmp_path / "ring.zst") == counts
    mix = binary.AddressMix(5)
    whole = binary.decode_table(pages, cpus, RING, addresses=mix)
    ringstore.store_ring(tmp_path / "ring.zst", RING, tmp_path / "a.parquet", addresses=mix, chunk_pages=4, workers=1)
    assert_same(read_table(tmp_path / "a.parquet"), whole)
    # counts that leave out CPU 3 (whose pages come last): its events would be out of place; caught, decoded at once
    assert counts.pages[3] > 0 and whole.ts[whole.cpu == 3].min() < whole.ts[whole.cpu == 0].max()
    wrong = stream.RingIndex({0: counts.pages[0], 1: counts.pages[1]}, {0: counts.first_ts[0], 1: counts.first_ts[1]})
    meta = ringstore.store_ring(tmp_path / "ring.zst", RING, tmp_path / "b.parquet", addresses=mix,
                                index=wrong, chunk_pages=4, workers=1)
    assert meta["store"]["streamed"] is False
    assert_same(read_table(tmp_path / "b.parquet"), whole)


def test_a_cpu_out_of_time_order_falls_back_to_one_sort(tmp_path: Path) -> None:
    pages, cpus = capture(np.random.default_rng(6), shuffle_cpu=1)
    counts = write_ring(tmp_path / "ring.zst", pages, cpus)
    mix = binary.AddressMix(9)
    whole = binary.decode_table(pages, cpus, RING, addresses=mix)
    meta = ringstore.store_ring(tmp_path / "ring.zst", RING, tmp_path / "events.parquet", addresses=mix,
                                index=counts, chunk_pages=3, workers=2)
    assert meta["store"]["streamed"] is False and "CPU 1" in meta["store"]["why"]
    got = read_table(tmp_path / "events.parquet")
    assert_same(got, whole)
    assert not (tmp_path / "events.parquet.tmp").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "events.parquet", "ring.zst"]


def test_stored_pointers_keep_their_equalities_and_are_never_the_addresses(tmp_path: Path) -> None:
    pages, cpus = capture(np.random.default_rng(8))
    counts = write_ring(tmp_path / "ring.zst", pages, cpus)
    ringstore.store_ring(tmp_path / "ring.zst", RING, tmp_path / "events.parquet", index=counts,
                         chunk_pages=4, workers=2)   # a key of its own, drawn at random
    got = read_table(tmp_path / "events.parquet")
    # the raw address of each row: decoded with a known key, then looked up
    known = binary.AddressMix(1)
    whole = binary.decode_table(pages, cpus, RING, addresses=known)
    back = dict(zip(known(np.asarray(ADDRS, np.uint64)).tolist(), ADDRS, strict=True))
    rows = got.rows("kfree_skb")
    assert np.array_equal(rows, whole.rows("kfree_skb")) and len(rows) > 100
    raw = np.array([back[v] for v in whole.nums[rows, 0].tolist()], np.uint64)
    stored = got.nums[rows, 0]
    assert set(raw.tolist()) == set(ADDRS)
    # never the address (NULL stays 0), and a bijection: the same rows share a value as shared an address
    assert np.array_equal(stored == 0, raw == 0)
    assert not (stored.view(np.uint64) == raw)[raw != 0].any()
    pairs = np.unique(np.stack([stored.view(np.uint64), raw]), axis=1).shape[1]
    assert pairs == len(np.unique(stored)) == len(np.unique(raw)) == len(ADDRS)


def _die(pages: np.ndarray, cpus: np.ndarray, job: object = None) -> None:
    os._exit(3)


def test_a_decoding_process_that_dies_is_a_trace_error_and_leaves_no_table(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pages, cpus = capture(np.random.default_rng(2))
    counts = write_ring(tmp_path / "ring.zst", pages, cpus)
    monkeypatch.setattr(ringstore, "_decode", _die)   # the forked workers run this one
    with pytest.raises(TraceError, match="died"):
        ringstore.store_ring(tmp_path / "ring.zst", RING, tmp_path / "events.parquet", index=counts,
                             chunk_pages=4, workers=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ring.zst"]


def test_workers_are_one_per_idle_cpu() -> None:
    allowed = len(os.sched_getaffinity(0))
    assert ringstore.workers_for(3) == 3 and ringstore.workers_for(0) == 1
    assert ringstore.workers_for(load=0.0) == min(ringstore.MAX_WORKERS, allowed)
    assert ringstore.workers_for(load=float(allowed)) == 1 and ringstore.workers_for(load=50.0) == 1
    if allowed >= 2:
        assert ringstore.workers_for(load=allowed - 1.2) == 1 and ringstore.workers_for(load=allowed - 2.0) == 2
