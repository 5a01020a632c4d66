"""`latscope breakdown` through the installed command: exit codes, one-line errors, --json, --perfetto."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.support import synthetic_run
from tests.unit.trace.conftest import FIXTURES


def test_breakdown_of_a_captured_trace_file(latscope, tmp_path: Path) -> None:
    """--trace FILE --json names the busy loop; --perfetto writes a trace-event file."""
    out = tmp_path / "late.json"
    r = latscope("breakdown", "--trace", str(FIXTURES / "veth-run.report"), "--json", "--perfetto", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["culprits"][0]["comm"] == "ls-interferer" and doc["perfetto_file"] == str(out)
    assert json.loads(out.read_text())["traceEvents"]


def test_run_without_a_trace_says_how_to_get_one(latscope, results: Path) -> None:
    """A run recorded without --trace: exit 1 and one line that points at `run --trace`."""
    run = synthetic_run(results, np.full(100, 50_000.0))
    r = latscope("breakdown", run.run_id)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "latscope run --trace" in lines[0] and "Traceback" not in r.stderr


def test_usage_errors_exit_2(latscope, tmp_path: Path) -> None:
    """No RUN and no --trace, a bad --threshold, or a file that is no trace: exit 2, no traceback."""
    assert latscope("breakdown").returncode == 2
    assert latscope("breakdown", "--trace", str(FIXTURES / "veth-run.txt"), "--threshold", "soon").returncode == 2
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 4)
    r = latscope("breakdown", "--trace", str(junk))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "not a kernel trace" in r.stderr
