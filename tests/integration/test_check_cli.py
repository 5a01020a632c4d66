"""`latscope check`: exit 0 within limits, 1 when one is broken, 2 for a malformed limit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support import synthetic_run


@pytest.fixture
def run_id(results: Path) -> str:
    lat = np.full(10_000, 100_000, np.int64)
    lat[5_000] = 400_000
    lost = np.zeros(10_000, bool)
    lost[7_000] = True
    return synthetic_run(results, lat, lost=lost).run_id


def test_within_limits_exit_0(latscope, run_id: str) -> None:
    """p99.9 = 100 µs is within 150 µs; one lost packet is within loss=1."""
    out = latscope("check", run_id, "--max", "p99.9=150us", "--max", "loss=1")
    assert out.returncode == 0, out.stderr
    assert "0 broken" in out.stdout and out.stdout.count("ok  ") == 2


def test_broken_limit_exit_1(latscope, run_id: str) -> None:
    """max = 400 µs breaks max=300us, one loss breaks loss=0: exit 1, both named."""
    out = latscope("check", run_id, "--max", "p99.9=150us", "--max", "loss=0", "--max", "max=300us")
    assert out.returncode == 1
    assert out.stdout.count("FAIL") == 2
    assert "2 of 3 limits broken: loss=0, max=300us" in out.stderr


def test_json_and_range(latscope, run_id: str) -> None:
    """--json says passed and each limit's actual value; --to 5s leaves the 400 µs packet out."""
    out = latscope("check", run_id, "--max", "max=300us", "--to", "5s", "--json")
    assert out.returncode == 0
    doc = json.loads(out.stdout)
    assert doc["passed"] is True and doc["limits"][0]["actual"] == 100.0


@pytest.mark.parametrize("limit", ["p99.9=150", "p42=1us", "nolimit"])
def test_malformed_limit_exit_2(latscope, run_id: str, limit: str) -> None:
    """A limit without a unit, an unknown statistic, a missing '=': usage error."""
    out = latscope("check", run_id, "--max", limit)
    assert out.returncode == 2 and out.stderr.count("\n") == 1


def test_no_limits_exit_2(latscope, run_id: str) -> None:
    """check without any limit is a usage error, not a silent pass."""
    assert latscope("check", run_id).returncode == 2
