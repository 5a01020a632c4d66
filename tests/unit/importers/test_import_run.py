"""import_run: one atomic run per file, with source provenance, readable by the store like any run."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import resource
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from latscope.analysis import metrics
from latscope.errors import ConfigError, FormatError
from latscope.importers import KINDS, import_run, parse_file
from latscope.store.layout import ResultsStore
from tests.conftest import BIN
from tests.unit.importers.conftest import IMPORT, ISOCHRON_CSV, ISOCHRON_DAT

FILES = {
    "isochron": ISOCHRON_DAT,
    "irtt": IMPORT / "irtt-veth-loss.json",
    "sockperf": IMPORT / "sockperf-veth-loss.csv",
}


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _tool_statistics(kind: str) -> dict[str, float]:
    """The latency statistics the tool itself reported for its file (µs): what an import must reproduce."""
    if kind == "isochron":
        # isochron report's own per-packet export: latency = sw_rx (r) - wakeup/send (w), no hardware stamps
        export = np.loadtxt(ISOCHRON_CSV, delimiter=",", dtype=np.int64)
        lat = (export[:, 8] - export[:, 3]) / 1000
        return {"count": len(lat), "min": lat.min(), "max": lat.max(), "avg": lat.mean()}
    if kind == "irtt":
        delay = json.loads(FILES["irtt"].read_text())["stats"]["send_delay"]  # ns, client -> server
        return {"count": delay["n"], "min": delay["min"] / 1000, "max": delay["max"] / 1000,
                "avg": delay["mean"] / 1000, "p50": delay["median"] / 1000}
    text = FILES["sockperf"].read_text()
    return {"count": int(re.search(r"Total (\d+) observations", text).group(1)),
            "min": float(re.search(r"<MIN> observation = +([\d.]+)", text).group(1)),
            "max": float(re.search(r"<MAX> observation = +([\d.]+)", text).group(1)),
            "avg": float(re.search(r"avg-latency=([\d.]+)", text).group(1))}


@pytest.mark.parametrize("kind", sorted(FILES))
def test_imported_run_reports_what_the_tool_reported(tmp_path: Path, kind: str) -> None:
    """The stored run, found by name, has the tool's own latency statistics; its source names the file."""
    store = ResultsStore(tmp_path)
    run = import_run(store, kind, FILES[kind], name=f"{kind}-run", tags=("imported", kind))
    again = ResultsStore(tmp_path).resolve(f"{kind}-run")
    assert again.run_id == run.run_id and again.record.tags == ("imported", kind)
    src = again.record.source
    assert src["kind"] == "imported" and src["tool"] == kind and src["import_kind"] == kind
    assert src["file_sha256"] == hashlib.sha256(FILES[kind].read_bytes()).hexdigest()
    assert src["metric"] in ("one-way latency", "round-trip") and src["notes"]
    assert again.record.config["topology"] == "imported"
    stored = again.record.summary["latency_us"]
    from_disk = metrics.latency(again.samples())
    from_disk = from_disk[~np.isnan(from_disk)] / 1000
    # tools print to the ns or to 3 decimals of a µs, some truncating: agreement to 1 ns
    for key, value in _tool_statistics(kind).items():
        assert stored[key] == pytest.approx(value, abs=0.0011), key
    assert len(from_disk) == stored["count"] and from_disk.max() == pytest.approx(stored["max"], abs=0.0011)


def test_created_is_the_measurement_time_when_known(tmp_path: Path) -> None:
    """created comes from the file (irtt start time); the import time is kept in source."""
    now = _dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=_dt.UTC)
    run = import_run(ResultsStore(tmp_path), "irtt", FILES["irtt"], name="x", now=now)
    assert run.record.created.startswith("2026-") and run.record.source["created_from"] == "file"
    assert run.record.source["imported_at"].startswith("2030-01-02T03:04:05")
    assert run.run_id.startswith("20300102-030405-")


def test_failed_parse_leaves_store_untouched(tmp_path: Path) -> None:
    """A malformed file raises before anything is written: the store directory is byte-for-byte the same."""
    store = ResultsStore(tmp_path / "results")
    import_run(store, "isochron", ISOCHRON_DAT, name="good")
    before = _listing(store.root)
    bad = tmp_path / "bad.dat"
    bad.write_bytes(ISOCHRON_DAT.read_bytes()[:1000])
    with pytest.raises(FormatError):
        import_run(store, "isochron", bad, name="bad")
    assert _listing(store.root) == before


def test_failed_write_leaves_no_staging(tmp_path: Path) -> None:
    """The samples file cannot be written (the file size limit is hit): exit 1, one line, no run, no staging."""
    store = ResultsStore(tmp_path)
    import_run(store, "isochron", ISOCHRON_DAT, name="good")
    before = _listing(store.root)

    def small_files() -> None:
        # a real write failure: EFBIG past 16 KiB (the samples file is larger), reported instead of killing
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, resource.RLIM_INFINITY))

    r = subprocess.run([str(BIN / "latscope"), "import", "isochron", str(ISOCHRON_DAT), "--name", "second",
                        "--results", str(store.root)], capture_output=True, text=True, timeout=120,
                       preexec_fn=small_files)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("latscope: error: could not save run")
    assert "File too large" in lines[0]
    assert _listing(store.root) == before


def test_metric_option_rules() -> None:
    """--metric is refused for one-way formats and checked against the tool's choices."""
    assert set(KINDS) == {"csv", "isochron", "irtt", "sockperf"}
    with pytest.raises(ConfigError, match="does not apply"):
        parse_file("isochron", ISOCHRON_DAT, "rtt")
    with pytest.raises(ConfigError, match="must be one of"):
        parse_file("sockperf", FILES["sockperf"], "one-way")
    with pytest.raises(ConfigError, match="unknown import kind"):
        parse_file("pcap", ISOCHRON_DAT)


def test_wrong_kind_is_a_format_error() -> None:
    """Feeding one tool's file to another importer is refused, never half-understood."""
    for kind, path in (("irtt", ISOCHRON_DAT), ("sockperf", FILES["irtt"]), ("isochron", FILES["sockperf"]),
                       ("csv", FILES["irtt"]), ("csv", ISOCHRON_DAT)):
        with pytest.raises(FormatError):
            parse_file(kind, path)
