"""`latscope import` on the command line: good files become runs every verb reads, bad ones change nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.importers.conftest import IMPORT, ISOCHRON_DAT

GOOD = {
    "isochron": ISOCHRON_DAT,
    "irtt": IMPORT / "irtt-veth-loss.json",
    "sockperf": IMPORT / "sockperf-veth-loss.csv",
}


def _listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


def _one_line_error(stderr: str) -> str:
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("latscope: error: "), stderr
    return lines[0]


@pytest.fixture
def seeded(latscope, results: Path) -> Path:
    """A store that already holds one imported run."""
    r = latscope("import", "isochron", str(ISOCHRON_DAT), "--name", "seed")
    assert r.returncode == 0, r.stderr
    return results


def test_import_prints_summary_and_run_id(latscope, results: Path) -> None:
    """Text output names the run, says what was stored and gives the classic summary lines."""
    r = latscope("import", "isochron", str(ISOCHRON_DAT), "--name", "veth-isochron", "--tag", "veth")
    assert r.returncode == 0, r.stderr
    assert "imported isochron" in r.stdout and "stored: one-way latency" in r.stdout
    assert "latency min/avg/max/stddev (usec):" in r.stdout and "packets: sent 2000, received 2000" in r.stdout


@pytest.mark.slow
def test_csv_import_and_every_reading_verb(latscope, tmp_path: Path) -> None:
    """A CSV import is shown, listed, filtered and queried like a measured run."""
    p = tmp_path / "lat.csv"
    p.write_text("seq,sched_ns,send_ns,rx_ns,rx_user_ns\n" + "".join(
        f"{i},{i * 1_000_000},{i * 1_000_000 + 500},{i * 1_000_000 + 20_500 + (i % 7) * 1000},"
        f"{i * 1_000_000 + 40_000}\n" for i in range(1000)))
    r = latscope("import", "csv", str(p), "--name", "from-csv", "--tag", "bridge", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["latency_us"]["min"] == 20.0 and doc["latency_us"]["max"] == 26.0
    show = json.loads(latscope("show", "from-csv", "--json").stdout)
    assert show["latency_us"] == doc["latency_us"] and show["source"]["tool"] == "csv"
    assert latscope("ls", "--where", "tag=bridge", "-q").stdout.split() == [doc["run_id"]]
    q = latscope("sql", "SELECT count(*) AS n, max(e2e_ns) AS e FROM samples", "--json")
    assert json.loads(q.stdout)["rows"] == [{"n": 1000, "e": 40_000}]


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_real_files_import(latscope, kind: str) -> None:
    """Each recorded real file imports with exit 0 and a source that names the tool and metric."""
    r = latscope("import", kind, str(GOOD[kind]), "--name", kind, "--json")
    assert r.returncode == 0, r.stderr
    src = json.loads(r.stdout)["source"]
    assert src["tool"] == kind and src["metric"] in ("one-way latency", "round-trip")


def _bad_files(tmp: Path) -> dict[str, tuple[str, Path]]:
    def w(name: str, data: bytes) -> Path:
        p = tmp / name
        p.write_bytes(data)
        return p

    iso, ir, sp = (GOOD[k].read_bytes() for k in ("isochron", "irtt", "sockperf"))
    return {
        "isochron-truncated": ("isochron", w("t.dat", iso[:5000])),
        "isochron-empty": ("isochron", w("e.dat", b"")),
        "isochron-text": ("isochron", w("x.dat", b"hello\n")),
        "irtt-truncated": ("irtt", w("t.json", ir[: len(ir) // 2])),
        "irtt-not-irtt": ("irtt", w("o.json", b'{"hello": 1}')),
        "sockperf-truncated": ("sockperf", w("t.csv", sp[: len(sp) - 100])),
        "sockperf-empty": ("sockperf", w("e.csv", b"\n")),
        "csv-bad-number": ("csv", w("b.csv", b"seq,send_ns,rx_ns\n0,1,2\n1,x,3\n")),
        "csv-header-only": ("csv", w("h.csv", b"seq,send_ns,rx_ns\n")),
        "wrong-kind-irtt-as-sockperf": ("sockperf", GOOD["irtt"]),
        "wrong-kind-dat-as-csv": ("csv", GOOD["isochron"]),
        "wrong-kind-csv-as-irtt": ("irtt", GOOD["sockperf"]),
        "missing-file": ("csv", tmp / "does-not-exist.csv"),
    }


BAD_CASES = ["isochron-truncated", "isochron-empty", "isochron-text", "irtt-truncated", "irtt-not-irtt",
             "sockperf-truncated", "sockperf-empty", "csv-bad-number", "csv-header-only",
             "wrong-kind-irtt-as-sockperf", "wrong-kind-dat-as-csv", "wrong-kind-csv-as-irtt", "missing-file"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_files_change_nothing(latscope, seeded: Path, tmp_path: Path, case: str) -> None:
    """Malformed, truncated, empty, wrong-kind or missing files: one error line, exit 2, store unchanged."""
    kind, path = _bad_files(tmp_path)[case]
    before = _listing(seeded)
    r = latscope("import", kind, str(path), "--name", "bad")
    assert r.returncode == 2, (r.stdout, r.stderr)
    _one_line_error(r.stderr)
    assert "Traceback" not in r.stderr
    assert _listing(seeded) == before


@pytest.mark.parametrize(("args", "needle"), [
    (["pcap", "x.pcap", "--name", "n"], "pcap"),
    (["irtt", str(GOOD["irtt"])], "--name"),
    (["irtt", str(GOOD["irtt"]), "--name", "n", "--metric", "p99"], "must be one of"),
    (["isochron", str(ISOCHRON_DAT), "--name", "n", "--metric", "rtt"], "does not apply"),
    (["sockperf", str(GOOD["sockperf"]), "--name", "n", "--metric", "one-way"], "must be one of"),
    (["irtt", str(IMPORT / "irtt-lo-midpoint.json"), "--name", "n", "--metric", "one-way"], "half-rtt"),
])
def test_usage_errors_change_nothing(latscope, seeded: Path, args: list[str], needle: str) -> None:
    """Unknown kind, missing --name, a metric the tool cannot give: exit 2, one line naming it, store unchanged."""
    before = _listing(seeded)
    r = latscope("import", *args)
    assert r.returncode == 2
    assert needle in _one_line_error(r.stderr)
    assert _listing(seeded) == before


def test_failed_import_does_not_create_the_results_root(latscope, tmp_path: Path) -> None:
    """A bad file into a results root that does not exist yet leaves no directory behind."""
    root = tmp_path / "fresh-root"
    bad = tmp_path / "bad.csv"
    bad.write_text("nonsense\n")
    r = latscope("import", "csv", str(bad), "--name", "n", env={"LATSCOPE_RESULTS": str(root)})
    assert r.returncode == 2 and not root.exists()


def test_show_of_unknown_run_after_imports(latscope, seeded: Path) -> None:
    """An unknown run id is one error line and exit 2; the store stays as it was."""
    before = _listing(seeded)
    r = latscope("show", "no-such-run")
    assert r.returncode == 2
    _one_line_error(r.stderr)
    assert _listing(seeded) == before
