"""The breakdown of whole traces (with and without a run, with and without markers), its text, JSON, Perfetto."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from latscope.errors import ConfigError, FormatError, TraceError
from latscope.trace import perfetto
from latscope.trace.breakdown import Options, analyse, load_run_table, load_trace_file
from latscope.trace.parse_text import parse_kernel_text
from latscope.trace.report import to_json, to_text
from tests.unit.trace.conftest import FIXTURES


@pytest.fixture(scope="module")
def trace_only():
    return analyse(load_trace_file(FIXTURES / "veth-run.txt"), None, Options())


def test_trace_without_a_run_is_judged_on_its_markers(trace_only) -> None:
    """Without samples the packets and their lateness come from the markers (metric 'trace')."""
    bd = trace_only
    assert bd.metric == "trace" and bd.packets == bd.traced >= 12
    assert bd.late and bd.culprits[0].name == "ls-interferer"
    assert any("no run samples" in w for w in bd.warnings)


def test_trace_without_markers_needs_pids_and_then_uses_send_calls() -> None:
    """Markers stripped: a clear error without pid hints; with them, each send call is a packet."""
    text = b"\n".join(ln for ln in (FIXTURES / "veth-run.txt").read_bytes().splitlines()
                      if b"tracing_mark_write" not in ln)
    table = parse_kernel_text(text)
    with pytest.raises(TraceError, match="--packet-pid"):
        analyse(table, None, Options())
    sender = int(table.pid[table.rows("sys_enter_sendmsg")[0]])
    receiver = int(table.pid[table.rows("sys_exit_recvmsg")[-1]])
    bd = analyse(table, None, Options(sender_pid=sender, receiver_pid=receiver))
    assert bd.traced >= 10 and bd.late and bd.culprits[0].name == "ls-interferer"


def test_empty_and_unreadable_traces_are_clear_errors(tmp_path: Path) -> None:
    """An empty trace is a TraceError; a binary trace.dat is a FormatError that says what to do."""
    with pytest.raises(TraceError, match="empty"):
        analyse(load_trace_file(FIXTURES / "empty.txt"), None, Options())
    dat = tmp_path / "trace.dat"
    dat.write_bytes(b"\x17\x08\x44tracing6\x00\x00\x00" + bytes(100))
    with pytest.raises(FormatError, match="trace-cmd report"):
        load_trace_file(dat)
    with pytest.raises(ConfigError):
        load_trace_file(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="--metric"):
        analyse(load_trace_file(FIXTURES / "veth-run.txt"), None, Options(metric="nonsense"))


def test_compressed_traces_are_read(tmp_path: Path) -> None:
    """.gz and .zst traces give the same events as the plain file."""
    import pyarrow as pa

    plain = load_trace_file(FIXTURES / "veth-run.report")
    gz = tmp_path / "t.report.gz"
    gz.write_bytes(gzip.compress((FIXTURES / "veth-run.report").read_bytes()))
    zst = tmp_path / "t.txt.zst"
    with pa.CompressedOutputStream(str(zst), "zstd") as fh:
        fh.write((FIXTURES / "veth-run.report").read_bytes())
    for path in (gz, zst):
        assert np.array_equal(load_trace_file(path).ts, plain.ts)


def test_overruns_are_reported_in_the_breakdown() -> None:
    """A trace that lost events says so in the breakdown's warnings and trace summary."""
    table = load_trace_file(FIXTURES / "veth-run.txt")
    bd = analyse(table, None, Options(), overruns=1234)
    assert bd.trace["overruns"] == 1234 and any("lost events" in w for w in bd.warnings)


def test_run_breakdown_with_samples_and_threshold(fixture_run) -> None:
    """With the run: e2e from its samples, --threshold decides who is late, untraced late packets are counted."""
    table = load_run_table(fixture_run.path)
    bd = analyse(table, fixture_run.samples(), Options(threshold_ns=250_000), run_id=fixture_run.run_id)
    assert bd.metric == "e2e" and bd.threshold_source == "--threshold" and bd.packets == 2000
    assert bd.late_untraced == bd.late_count - len(bd.late) > 0  # the fixture keeps a dozen packets only
    assert all(p.value_ns > 250_000 for p in bd.late)
    lat = analyse(table, fixture_run.samples(), Options(metric="latency"))
    assert lat.metric == "latency" and lat.threshold_ns < bd.threshold_ns


def test_json_document_is_stable_and_plain(fixture_run) -> None:
    """The JSON has the documented keys, plain types, and microseconds with three decimals."""
    bd = analyse(load_run_table(fixture_run.path), fixture_run.samples(), Options(threshold_ns=250_000))
    doc = json.loads(json.dumps(to_json(bd), allow_nan=False))
    assert doc["format"] == "latscope-breakdown" and doc["schema_version"] == 1
    assert {"culprits", "late_packets", "stages", "dominant_stages", "trace", "warnings"} <= set(doc)
    p = doc["late_packets"][0]
    assert {"seq", "latency_us", "dominant_stage", "stages", "culprits", "collateral_of"} <= set(p)
    assert {"name", "us"} <= set(p["stages"][0]) and {"comm", "pid", "cpu", "us"} <= set(p["culprits"][0])
    assert {"comm", "count", "total_us"} <= set(doc["culprits"][0])
    assert all(round(s["us"], 3) == s["us"] for s in p["stages"])
    assert [c["count"] for c in doc["culprits_by_count"]] == sorted((c["count"] for c in doc["culprits"]),
                                                                    reverse=True)


def test_text_report_reads_top_down(trace_only) -> None:
    """Culprits first, then dominant stages, baselines, and per-packet timelines with +N us and seq."""
    text = to_text(trace_only, top=1)
    order = [text.index(h) for h in ("Culprits of the", "Where the late packets", "Stage times of packets",
                                     "Late packets, worst first")]
    assert order == sorted(order)
    seq = trace_only.late[0].seq
    assert f"seq {seq}" in text and "ls-interferer" in text.split("Where the late")[0]
    assert "+" in text.split(f"seq {seq}")[1] and " us  runqueue wait" in text


def test_perfetto_document_is_well_formed(trace_only, tmp_path: Path) -> None:
    """Slices have durations >= 0, every flow start has its end, CPU and packet tracks are named."""
    n = perfetto.write(trace_only, tmp_path / "p.json")
    doc = json.loads((tmp_path / "p.json").read_text())
    ev = doc["traceEvents"]
    assert n == len(ev) > 0
    slices = [e for e in ev if e["ph"] == "X"]
    assert slices and all(e["dur"] >= 0 and e["ts"] >= 0 for e in slices)
    starts = {e["id"] for e in ev if e["ph"] == "s"}
    ends = {e["id"] for e in ev if e["ph"] == "f"}
    assert starts and starts == ends
    names = {e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"CPU 0", "CPU 1"} <= names and any(n.startswith("seq ") for n in names)
    stage = [e for e in slices if e["pid"] == perfetto.PID_PACKETS and e["args"].get("dominant")]
    assert stage and stage[0]["name"] == "runqueue wait"
