"""Fixtures of the trace tests: the real captured snippets in tests/fixtures/trace/ (capture_fixtures.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from latscope.store.layout import ResultsStore, StoredRun

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "trace"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.fixture(scope="session")
def text_bytes() -> bytes:
    """The kernel text of a dozen packets of a traced veth run (one made late by a FIFO busy loop)."""
    return fixture_bytes("veth-run.txt")


@pytest.fixture(scope="session")
def raw_bytes() -> bytes:
    """The same buffer in the raw rendering (pid cpu ns ...)."""
    return fixture_bytes("veth-run.raw")


@pytest.fixture
def fixture_run(tmp_path: Path) -> StoredRun:
    """The fixture's own run (run.json + samples) in a results store, with its trace under trace/."""
    root = tmp_path / "results"
    run = root / "20261125-000000-fixtur"
    (run / "trace").mkdir(parents=True)
    shutil.copy(FIXTURES / "veth-run.run.json", run / "run.json")
    shutil.copy(FIXTURES / "veth-run.samples.parquet", run / "samples.parquet")
    shutil.copy(FIXTURES / "veth-run.txt", run / "trace" / "trace.txt")
    return ResultsStore(root).resolve(str(run))
