"""The campaign report on stored runs with a planted effect: it must find exactly that effect.

The runs are synthetic (known latencies, stored in a real results root with the
tags a campaign gives them): level `slow` of factor `load` adds 80 us to the
tail (1 % of packets), factor `fs` does nothing. Repeats differ as whole runs
(each its own median), as real repeats do.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from latscope.cli.main import main
from latscope.experiment.campaign import load
from tests.support import synthetic_run

CAMPAIGN = """\
name = "planted"
repeats = 4
[base]
count = 4000
[factors]
load = { idle = {}, slow = { spin = "10us" } }
fs = { ext4 = {}, ext2 = { size = 100 } }
"""
N = 4000
TAIL_SHIFT_NS = 80_000


def plant(root: Path, campaign_file: Path, *, leave_out: int = 0) -> dict[str, float]:
    """Store every planned run with latencies that follow the planted truth; return p99.9 (us) per level."""
    c = load(campaign_file)
    rng = np.random.default_rng(11)
    tails: dict[str, list[float]] = {"idle": [], "slow": []}
    for run in c.plan()[leave_out:]:
        levels = dict(run.cell.levels)
        base = rng.normal(30_000, 1_500)  # a repeat's own median: runs differ as wholes
        lat = base + rng.gamma(2.0, 2_000, N)
        tail = rng.random(N) < 0.01
        if levels["load"] == "slow":
            lat[tail] += TAIL_SHIFT_NS
        synthetic_run(root, lat.astype(np.int64), name=c.run_name(run), tags=tuple(c.run_tags(run)))
        tails[levels["load"]].append(float(np.percentile(lat, 99.9)) / 1000)
    return {k: float(np.median(v)) for k, v in tails.items() if v}


@pytest.fixture
def campaign_file(tmp_path: Path) -> Path:
    p = tmp_path / "planted.toml"
    p.write_text(CAMPAIGN)
    return p


def invoke(*args: str) -> tuple[int, str, str]:
    """The CLI in this process, as `latscope` runs it (errors mapped to one line and an exit code)."""
    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        code = main(list(args))
        return code, out.getvalue().decode(), err.getvalue().decode()


def test_report_finds_the_planted_effect_and_no_other(results: Path, campaign_file: Path, tmp_path: Path) -> None:
    truth = plant(results, campaign_file)
    code, out, err = invoke("campaign", "report", str(campaign_file), "--results", str(results), "--json",
                            "--bootstrap", "400")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["format"] == "latscope-campaign-report" and doc["schema_version"] == 1
    assert doc["missing_runs"] == []
    (load_effect,) = doc["factors"]["load"]
    assert load_effect["level"] == "slow" and load_effect["baseline"] == "idle" and load_effect["runs"] == [8, 8]
    tail = load_effect["comparison"]["metrics"]["p999"]
    assert tail["verdict"] == "higher"
    low, high = tail["interval"]
    planted = truth["slow"] - truth["idle"]
    assert low <= planted <= high, (planted, tail)
    assert "slow raises p99.9 by" in doc["conclusions"]["load"]
    (fs_effect,) = doc["factors"]["fs"]
    assert fs_effect["comparison"]["metrics"]["p999"]["verdict"] == "no significant difference"
    assert "no significant difference" in doc["conclusions"]["fs"]
    # The interaction table holds the cell medians: the slow row is higher in every column.
    it = doc["interaction"]
    assert it["rows"] == "load" and it["columns"] == "fs"
    idle_row, slow_row = it["stats"]["p99.9"]
    assert all(s > i for s, i in zip(slow_row, idle_row, strict=True))
    cells = {c["cell"]: c for c in doc["cells"]}
    assert all(c["repeats"] == 4 and len(c["p99_repeats"]) == 4 for c in cells.values())


def test_html_report_has_conclusions_tables_and_figures(results: Path, campaign_file: Path, tmp_path: Path) -> None:
    plant(results, campaign_file)
    out = tmp_path / "r.html"
    png = tmp_path / "png"
    code, stdout, err = invoke("campaign", "report", str(campaign_file), "--results", str(results), "-o", str(out),
                               "--png", str(png), "--bootstrap", "200")
    assert code == 0, err
    html = out.read_text()
    assert "slow raises p99.9 by" in html and "Interaction: load" in html
    for fig in ("ccdf-load", "ccdf-fs", "repeats-p99", "worst-repeat"):
        assert f'id="{fig}"' in html
        assert (png / f"{fig}.png").stat().st_size > 1000
    assert "<script" not in html and " src=" not in html and "<link" not in html
    assert "slow raises p99.9" in stdout


def test_missing_runs_are_named_and_the_rest_is_used(results: Path, campaign_file: Path) -> None:
    plant(results, campaign_file, leave_out=3)
    code, out, err = invoke("campaign", "report", str(campaign_file), "--results", str(results), "--json",
                            "--bootstrap", "100")
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["missing_runs"]) == 3
    assert "3 of 16 planned runs are not made" in err
    assert sum(c["repeats"] for c in doc["cells"]) == 13


def test_status_counts_stored_runs_even_without_a_state_file(results: Path, campaign_file: Path) -> None:
    plant(results, campaign_file, leave_out=5)
    code, out, err = invoke("campaign", "status", str(campaign_file), "--results", str(results), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["done"], doc["to_do"], doc["failed"]) == (11, 5, 0)


def test_report_without_runs_is_a_clear_error(results: Path, campaign_file: Path) -> None:
    code, _out, err = invoke("campaign", "report", str(campaign_file), "--results", str(results))
    assert code == 2
    assert "has no stored runs yet" in err
