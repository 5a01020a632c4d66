"""The binary trace path on the real kernel: parity with the kernel's own text, and streaming.

Parity: one traced veth run into a private instance; with tracing stopped,
the kernel renders the buffer as text (the ``trace`` file does not consume
it) and then the same buffer is drained page by page from
``trace_pipe_raw``. The text parser and the binary decoder must give the
same table, every event and every field.

Streaming: a burst of trace_marker writes far larger than a deliberately
small buffer. Read once at the end, the buffer overruns; drained during the
writes by latscope's reader, every write is in the stored trace.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latscope.probe.config import MeasureConfig
from latscope.session import measure
from latscope.store.layout import ResultsStore
from latscope.trace import binary, capture, ringstore, stream, tracefs
from latscope.trace import events as ev
from latscope.trace.breakdown import load_run_table
from latscope.trace.parse_text import parse_kernel_text
from latscope.trace.table import read_table

pytestmark = [pytest.mark.root, pytest.mark.tracefs]


class _Marker:
    """A Capture that only hands the workers the instance's trace_marker."""

    def __init__(self, inst: tracefs.Instance) -> None:
        self.inst = inst

    def start(self, workdir: Path, path: Any) -> dict[str, Any]:
        return {"trace_marker": str(self.inst.path / "trace_marker")}

    def stop(self, workdir: Path) -> dict[str, Any]:
        return {"record": {}, "completeness": {}}

    def close(self) -> None:
        pass


def _columns(t: Any) -> dict[str, np.ndarray]:
    s = np.array([*t.strings, None], dtype=object)
    e = np.array(t.event_names, dtype=object)
    return {"ts": t.ts, "cpu": t.cpu, "pid": t.pid, "comm": s[t.comm], "event": e[t.event], "ctx": t.ctx,
            "nums": t.nums, "s0": s[t.strs[:, 0]], "s1": s[t.strs[:, 1]]}


def test_binary_decoder_and_text_parser_agree_on_one_capture(tmp_path: Path) -> None:
    root = tracefs.find_tracefs()
    inst = tracefs.Instance.create(root, "parity")
    try:
        inst.write("trace_clock", "tai")
        for opt, value in capture.OPTIONS.items():
            if inst.exists(f"options/{opt}"):
                inst.write(f"options/{opt}", value)
        inst.write("buffer_size_kb", str(32 << 10))
        specs = [s for s in ev.resolve(None) if inst.exists(f"events/{s.group}/{s.event}/enable")]
        for s in specs:
            inst.write(f"events/{s.group}/{s.event}/enable", "1")
        inst.write("tracing_on", "1")
        measure(MeasureConfig(topology="veth", count=1500), ResultsStore(tmp_path / "r"), captures=(_Marker(inst),))
        inst.write("tracing_on", "0")
        assert sum(s.lost for s in tracefs.cpu_stats(inst)) == 0
        # The pid -> comm map the text is rendered with is the kernel's, shared with every tracer on the
        # machine: read it before and after; a pid whose entry another tracer changed meanwhile may show either.
        before = tracefs.saved_cmdlines(root)
        text = inst.read_bytes("trace")
        inst.write("options/raw", "1")
        raw = inst.read_bytes("trace")
        cmdlines = tracefs.saved_cmdlines(root)
        moved = {p for p in set(before) | set(cmdlines) if before.get(p) != cmdlines.get(p)}
        page_size = capture.subbuf_bytes(inst)
        ring = binary.RingMeta(page_size, inst.read("events/header_page"), capture.event_formats(inst, specs),
                               cmdlines)
        pages, cpus = stream.read_all(inst.path, inst.cpus(), page_size)
        assert inst.read_bytes("trace").count(b"\n") < 20   # trace_pipe_raw consumed the buffer
    finally:
        inst.remove()
    from_text = parse_kernel_text(text, raw)
    mix = binary.AddressMix()
    from_pages = binary.decode_table(pages, cpus, ring, comm_fallback=False, kallsyms=binary.Kallsyms.load(),
                                     addresses=mix)
    assert from_text.meta["ts_source"] == "raw" and from_text.meta["parse"]["unparsed"] == 0
    assert len(from_pages) == len(from_text) > 10_000
    a, b = _columns(from_pages), _columns(from_text)
    racing = np.isin(from_pages.pid, np.asarray(sorted(moved), np.int32))
    assert racing.mean() < 0.01
    # pointer cells: the binary table holds the addresses mixed, the text (hash-ptr off) the addresses
    pointer = np.zeros(a["nums"].shape, bool)
    for name, cols in binary.pointer_columns(ring.parsed()[1]).items():
        pointer[np.ix_(from_pages.rows(name), cols)] = True
    assert pointer[from_pages.rows("net_dev_queue"), 0].all() and pointer.sum() > 1000
    for name in a:
        differ = a[name] != b[name]
        if name == "comm":
            differ &= ~racing
        if name == "nums":
            differ &= ~pointer
        rows = np.flatnonzero(differ.any(axis=1) if differ.ndim > 1 else differ)
        assert len(rows) == 0, f"{name} differs in {len(rows)} rows, first {rows[:3]}"
    # ... a bijection over the table: the same cells share a value as shared an address, none is the address
    stored, addr = a["nums"][pointer], b["nums"][pointer]
    assert np.array_equal(stored == 0, addr == 0) and not (stored == addr)[addr != 0].any()
    pairs = np.unique(np.stack([stored, addr]), axis=1).shape[1]
    assert pairs == len(np.unique(stored)) == len(np.unique(addr)) > 100
    # the capture really exercised the fields: markers, switches, the network path, timers
    counts = from_pages.counts()
    for name in ("print", "sched_switch", "net_dev_xmit", "sys_exit_sendto", "hrtimer_expire_entry"):
        assert counts.get(name, 0) > 0, name
    assert (from_pages.nums[from_pages.rows("print"), 0] >= 0).all()
    # decoding in chunks of pages gives the same table (one key for all of them)
    chunks = [binary.decode_table(pages[i:i + 7], cpus[i:i + 7], ring, comm_fallback=False,
                                  kallsyms=binary.Kallsyms.load(), addresses=mix) for i in range(0, len(pages), 7)]
    joined = _columns(binary.concat(chunks))
    for name in a:
        assert np.array_equal(joined[name], a[name]), name
    # ... and so does storing it a slice at a time from chunks decoded by worker processes
    sink = stream.PageSink(tmp_path / "ring.zst", page_size)
    for p, c in zip(pages, cpus, strict=True):
        sink.write(int(c), p.tobytes())
    sink.close()
    meta = ringstore.store_ring(tmp_path / "ring.zst", ring, tmp_path / "events.parquet", index=sink.index,
                                kallsyms=binary.Kallsyms.load(), addresses=mix, chunk_pages=7, workers=2,
                                comm_fallback=False)
    assert meta["store"]["streamed"] and meta["store"]["chunks"] > 5
    stored_table = _columns(read_table(tmp_path / "events.parquet"))
    for name in a:
        assert np.array_equal(stored_table[name], a[name]), name


def _burst(marker: str, n: int, per_burst: int = 250, pause_s: float = 0.01) -> None:
    """``n`` marker writes in paced bursts (about 25,000 a second), from CPU 0."""
    fd = os.open(marker, os.O_WRONLY)
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        for i in range(n):
            os.write(fd, b"latscope tx seq=%d\n" % i)
            if i % per_burst == per_burst - 1:
                time.sleep(pause_s)
    finally:
        os.sched_setaffinity(0, old)
        os.close(fd)


@pytest.mark.serial
@pytest.mark.parametrize("streamed", [False, True])
def test_streaming_keeps_up_where_the_same_small_buffer_overruns(tmp_path: Path, streamed: bool) -> None:
    n = 60_000   # about 3 MB of events on CPU 0, three times its buffer
    cap = capture.TraceCapture(count=n, duration_ns=3_000_000_000, event_changes="-all,+sched:sched_switch",
                               buffer_kb=1024, stream=streamed)
    work = tmp_path / "run"
    work.mkdir()
    try:
        spec = cap.start(work, None)
        _burst(spec["trace_marker"], n)
        out = cap.stop(work)
    finally:
        cap.close()
    assert cap.instance is not None and not cap.instance.path.exists()
    rec = out["record"]["trace"]
    assert "error" not in rec, rec.get("error")
    assert rec["streamed"] is streamed and rec["buffer_kb"]["0"] == 1024
    table = read_table(work / "trace" / "events.parquet")
    seq = table.nums[table.rows("print"), 0]
    if not streamed:
        assert out["completeness"]["trace_overruns"] > 0 and len(seq) < n
        return
    assert out["completeness"]["trace_overruns"] == 0, rec["per_cpu"]
    assert np.array_equal(np.sort(seq), np.arange(n))
    assert rec["reader"]["policy"] == "SCHED_IDLE" and rec["reader"]["drains"] >= 5
    assert rec["reader"]["cpu_s"] < 5
    # without events.parquet, the run's trace is decoded again from the stored pages: the same table
    (work / "trace" / "events.parquet").unlink()
    again = load_run_table(work)
    assert np.array_equal(again.ts, table.ts) and np.array_equal(again.nums, table.nums)
