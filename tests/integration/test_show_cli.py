"""`latscope show`: the classic summary, ranges, histogram, windows, worst packets, anomalies, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.support import synthetic_run


@pytest.fixture
def run_id(results: Path) -> str:
    """A 20 s run at 1 kHz: ~80 µs, slower (120 µs) from 10 s to 15 s, a warm-up spike and a 30 ms hold."""
    rng = np.random.default_rng(0)
    lat = (80_000 + 2_000 * rng.standard_normal(20_000)).astype(np.int64)
    lat[10_000:15_000] += 40_000
    lat[0] = 900_000
    lat[17_000:17_030] += 30_000_000 - np.arange(30) * 1_000_000
    return synthetic_run(results, lat, name="shaped").run_id


def test_classic_lines_then_extras(latscope, run_id: str) -> None:
    """The first lines keep the sample apps' shape; p99.999 and the anomalies follow."""
    out = latscope("show", run_id)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"shaped ({run_id})"
    assert re.fullmatch(r"Total: 20000 packets \(~= 20seconds\)", lines[1])
    assert re.fullmatch(r"  latency min/avg/max/stddev \(usec\): [\d.]+/[\d.]+/[\d.]+/[\d.]+", lines[2])
    assert lines[3].startswith("  delta min/avg/max/stdev (usec): ")
    assert any(line.startswith("  latency p99.999 (usec): ") for line in lines)
    assert "[held_burst] 17.000-17.029 s" in out.stdout
    assert "--skip-warmup" in out.stdout


@pytest.mark.slow
def test_range_selects_by_send_time(latscope, run_id: str) -> None:
    """--from 10s --to 15s sees only the slow stretch: 5000 packets around 120 µs."""
    doc = json.loads(latscope("show", run_id, "--from", "10s", "--to", "15s", "--json").stdout)
    assert doc["selection"]["rows"] == 5000 and doc["packets"]["sent"] == 5000
    assert 115 < doc["latency_us"]["p50"] < 125
    text = latscope("show", run_id, "--from", "10s", "--to", "15s").stdout
    assert "range: 10.000 s to 15.000 s of a 19.999 s run (5000 packets)" in text


@pytest.mark.slow
def test_skip_warmup_drops_the_first_packet(latscope, run_id: str) -> None:
    """--skip-warmup 1s leaves the 900 µs first packet out of max and anomalies."""
    full = json.loads(latscope("show", run_id, "--json").stdout)
    warm = json.loads(latscope("show", run_id, "--skip-warmup", "1s", "--json").stdout)
    assert full["worst"][0]["seq"] == 17_000 and full["latency_us"]["max"] > 29_000
    assert not any(a["start_s"] < 1 for a in warm["anomalies"])
    assert any(a["start_s"] < 1 for a in full["anomalies"])


def test_histogram_windows_and_worst(latscope, run_id: str) -> None:
    """--histogram --bins 10us, --window 5s and --worst 3 print their sections with seq and time."""
    out = latscope("show", run_id, "--bins", "10us", "--window", "5s", "--worst", "3")
    assert out.returncode == 0, out.stderr
    assert "histogram (bin 10 us" in out.stdout
    assert "latency per 5 s window (usec):" in out.stdout
    rows = [line for line in out.stdout.splitlines() if re.match(r"\s+\d+\.000\s+\d+\s+\d+\s", line)]
    assert len(rows) == 4
    assert re.search(r"\n\s+17000\s+17\.000000\s+30\d\d\d\.\d{3}", out.stdout)


def test_json_keeps_the_document_and_adds_sections(latscope, run_id: str) -> None:
    """--json keeps run_id, packets, *_us with p50..p9999 (now p99999), config, environment; adds the rest."""
    doc = json.loads(latscope("show", run_id, "--json", "--histogram", "--window", "1s", "--metric", "delta").stdout)
    for key in ("run_id", "packets", "latency_us", "delta_us", "wakeup_latency_us", "arrival_latency_us",
                "config", "environment", "selection", "anomalies", "worst"):
        assert key in doc, key
    assert {"min", "avg", "max", "stddev", "p50", "p90", "p99", "p999", "p9999", "p99999"} <= set(doc["latency_us"])
    assert doc["histogram"]["metric"] == "delta" and doc["histogram"]["total"] == 19_999
    assert len(doc["windows"]["p99_us"]) == 20
    assert all({"kind", "start_s", "end_s", "explanation"} <= set(a) for a in doc["anomalies"])


def test_empty_range_is_exit_2(latscope, run_id: str) -> None:
    """A range past the end of the run: one line, exit 2."""
    out = latscope("show", run_id, "--from", "1m")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "holds no packets" in out.stderr


def test_bad_input_is_exit_2(latscope, results: Path, run_id: str) -> None:
    """Unknown run, truncated samples.parquet, corrupt run.json: one clear line each, exit 2."""
    out = latscope("show", "nosuchrun")
    assert out.returncode == 2 and "no run" in out.stderr
    samples = results / run_id / "samples.parquet"
    samples.write_bytes(samples.read_bytes()[: samples.stat().st_size // 2])
    out = latscope("show", run_id)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "samples" in out.stderr
    (results / run_id / "run.json").write_text("{ not json")
    out = latscope("show", str(results / run_id))
    assert out.returncode == 2 and out.stderr.count("\n") == 1


@pytest.mark.slow
def test_real_loopback_run(latscope) -> None:
    """A real loopback run shows with every option; counts line up with what was sent."""
    made = latscope("run", "--topology", "loopback", "--count", "2000", "--period", "200us", "-q", "--json")
    assert made.returncode == 0, made.stderr
    run_id = json.loads(made.stdout)["run_id"]
    out = latscope("show", run_id, "--skip-warmup", "10ms", "--histogram", "--window", "100ms", "--worst", "5",
                   "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["selection"]["rows"] == 2000 - 50
    assert len(doc["worst_by_metric"]["packets"]) == 5
    assert sum(doc["windows"]["count"]) + sum(doc["windows"]["lost"]) == 1950


def test_imported_run_without_schedule(latscope, tmp_path: Path) -> None:
    """An import with only send and receive times: ranges and duration use send_ns instead of the schedule."""
    csv = tmp_path / "lat.csv"
    base = 1_700_000_000_000_000_000
    csv.write_text("seq,send_ns,rx_ns\n" + "".join(
        f"{i},{base + i * 1_000_000},{base + i * 1_000_000 + 50_000 + (i % 7) * 100}\n" for i in range(3000)))
    made = latscope("import", "csv", str(csv), "--name", "imported")
    assert made.returncode == 0, made.stderr
    out = latscope("show", "imported", "--from", "1s", "--json")
    doc = json.loads(out.stdout)
    assert doc["selection"]["time_column"] == "send_ns" and doc["selection"]["rows"] == 2000
    assert doc["duration_ns"] == 1999 * 1_000_000


def test_window_alone_means_per_second(latscope, run_id: str) -> None:
    """--window without a value cuts the run into 1 s windows."""
    doc = json.loads(latscope("show", run_id, "--window", "--json").stdout)
    assert doc["windows"]["window_s"] == 1.0 and len(doc["windows"]["max_us"]) == 20
