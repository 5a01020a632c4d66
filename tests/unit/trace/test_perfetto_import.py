"""The Perfetto export opens in Perfetto: checked against the importer's rules, and by trace_processor when present.

No registry package here ships a trace_processor binary (the `perfetto` PyPI package downloads one at run
time, which this machine cannot): ``problems`` checks the trace-event format's rules as Perfetto's JSON
importer applies them (integer nanoseconds by truncation, properly nested slices, flows bound to slices).
Where a trace processor is available (LATSCOPE_TRACE_PROCESSOR=path, or trace_processor_shell on PATH, and
the `perfetto` Python package), the export is loaded and queried.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from latscope.trace import perfetto
from latscope.trace.breakdown import Options, analyse, load_trace_file
from tests.unit.trace.conftest import FIXTURES

TRACE_PROCESSOR = os.environ.get("LATSCOPE_TRACE_PROCESSOR") or shutil.which("trace_processor_shell")


@pytest.fixture(scope="module")
def trace_only():
    return analyse(load_trace_file(FIXTURES / "veth-run.txt"), None, Options())


def test_export_meets_the_importers_rules(trace_only, tmp_path: Path) -> None:
    """Nothing Perfetto's JSON importer would drop or misnest, in its own integer nanoseconds."""
    perfetto.write(trace_only, tmp_path / "p.json")
    doc = json.loads((tmp_path / "p.json").read_text())
    assert perfetto.problems(doc) == []
    # times land on the exact nanosecond after the importer's truncation
    tl = trace_only.timeline
    seg = next(e for e in doc["traceEvents"] if e["ph"] == "X" and e["pid"] == perfetto.PID_CPUS)
    k = next(i for i in range(len(tl.segments.pid)) if int(tl.segments.pid[i]) == seg["args"]["pid"])
    assert perfetto.import_ns(seg["ts"]) == int(tl.segments.start[k]) - tl.start_ns


def test_the_checker_finds_what_perfetto_rejects() -> None:
    """Rounded microseconds that truncate into an overlap, a flow with no slice, a bad phase: each named."""
    base = {"ph": "X", "pid": 1, "tid": 1}
    doc = {"traceEvents": [
        {**base, "ts": 65970.050, "dur": 0.005},  # ends at 65970055 ns
        {**base, "ts": 65970.055, "dur": 10.0},   # truncates to 65970054 ns: starts inside, ends outside
        {"ph": "s", "pid": 1, "tid": 2, "id": 7, "ts": 5.0, "name": "f", "cat": "c"},
        {"ph": "Q", "pid": 1, "tid": 1, "ts": 1.0},
        {"ph": "M", "pid": 1, "name": "thread_name", "args": {}},
    ]}
    found = perfetto.problems(doc)
    assert len(found) == 4
    assert any("not nested" in p for p in found) and any("Perfetto drops it" in p for p in found)
    assert any("unknown phase" in p for p in found) and any("without args.name" in p for p in found)
    assert perfetto.problems({"traceEvents": [{**base, "ts": (65970050 + 0.25) / 1000, "dur": 5.25 / 1000},
                                              {**base, "ts": (65970055 + 0.25) / 1000, "dur": 10.0}]}) == []


@pytest.mark.skipif(TRACE_PROCESSOR is None, reason="no trace_processor_shell: no registry package ships one "
                    "(set LATSCOPE_TRACE_PROCESSOR to a binary to run this)")
def test_trace_processor_loads_and_queries_the_export(trace_only, tmp_path: Path) -> None:
    """Perfetto's own trace processor: every slice, thread name and flow of the export is in its tables."""
    tp_api = pytest.importorskip("perfetto.trace_processor")
    perfetto.write(trace_only, tmp_path / "p.json")
    ev = json.loads((tmp_path / "p.json").read_text())["traceEvents"]
    tp = tp_api.TraceProcessor(trace=str(tmp_path / "p.json"),
                               config=tp_api.TraceProcessorConfig(bin_path=TRACE_PROCESSOR))
    try:
        slices = next(iter(tp.query("select count(*) as n from slice"))).n
        flows = next(iter(tp.query("select count(*) as n from flow"))).n
        names = {r.name for r in tp.query("select name from thread where name is not null")}
        stage = next(iter(tp.query("select name from slice join args using (arg_set_id) "
                                   "where key = 'args.dominant' and int_value = 1 limit 1"))).name
    finally:
        tp.close()
    assert slices == sum(e["ph"] == "X" for e in ev)
    assert flows == sum(e["ph"] == "s" for e in ev) > 0
    assert {"CPU 0", "CPU 1"} <= names and stage == "runqueue wait"
