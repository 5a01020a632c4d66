"""import_run: one atomic run per file, with source provenance, readable by the store like any run."""

from __future__ import annotations

import datetime as _dt
import hashlib
from pathlib import Path

import pytest

from latscope.analysis.summary import summarise
from latscope.errors import ConfigError, FormatError
from latscope.importers import KINDS, import_run, parse_file
from latscope.store.layout import ResultsStore
from tests.unit.importers.conftest import IMPORT, ISOCHRON_DAT

FILES = {
    "isochron": ISOCHRON_DAT,
    "irtt": IMPORT / "irtt-veth-loss.json",
    "sockperf": IMPORT / "sockperf-veth-loss.csv",
}


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("kind", sorted(FILES))
def test_imported_run_is_a_normal_run(tmp_path: Path, kind: str) -> None:
    """The stored run resolves by name, its samples re-summarise to the stored summary, source names the file."""
    store = ResultsStore(tmp_path)
    run = import_run(store, kind, FILES[kind], name=f"{kind}-run", tags=("imported", kind))
    again = store.resolve(f"{kind}-run")
    assert again.run_id == run.run_id and again.record.tags == ("imported", kind)
    src = again.record.source
    assert src["kind"] == "imported" and src["tool"] == kind and src["import_kind"] == kind
    assert src["file_sha256"] == hashlib.sha256(FILES[kind].read_bytes()).hexdigest()
    assert src["metric"] in ("one-way latency", "round-trip") and src["notes"]
    fresh = summarise(again.samples(), again.record.completeness)
    assert fresh["latency_us"] == again.record.summary["latency_us"]
    assert again.record.config["topology"] == "imported"


def test_created_is_the_measurement_time_when_known(tmp_path: Path) -> None:
    """created comes from the file (irtt start time); the import time is kept in source."""
    now = _dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=_dt.timezone.utc)
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


def test_failed_write_leaves_no_staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If writing the samples fails half way, no run and no staging directory remain."""
    import latscope.store.samples as samples_mod

    store = ResultsStore(tmp_path)
    import_run(store, "isochron", ISOCHRON_DAT, name="good")
    before = _listing(store.root)

    def boom(path, columns):
        Path(path).write_bytes(b"PAR1 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(samples_mod, "write_samples", boom)
    with pytest.raises(Exception, match="disk full|space"):
        import_run(store, "isochron", ISOCHRON_DAT, name="second")
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
