"""The seed's campaign file (examples/seed-fs.toml) makes real VM runs: one run of its trial."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_campaign import EXAMPLES, stored

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.mark.vm
def test_seed_example_makes_vm_runs_at_a_small_count(results: Path, latscope) -> None:
    example = str(EXAMPLES / "seed-fs.toml")
    trial = ("--set", "count=300", "--repeats", "1")
    r = latscope("campaign", "run", example, *trial, "--max-runs", "1", "--results", str(results), timeout=900)
    assert r.returncode == 0, r.stderr
    runs = [x for x in stored(results) if x["status"] == "complete"]
    assert len(runs) == 1
    assert all(x["config"]["topology"] == "vm" and x["summary"]["packets"]["received"] == 300 for x in runs)
    st = json.loads(latscope("campaign", "status", example, *trial, "--results", str(results), "--json").stdout)
    assert (st["done"], st["to_do"]) == (1, 11)
