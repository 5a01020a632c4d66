"""`ls --where` filters and `--sort`: keys, operators, units, missing values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latscope.errors import ConfigError
from latscope.store import catalog
from latscope.store.layout import StoredRun
from tests.support import synthetic_run


@pytest.fixture
def runs(tmp_path: Path) -> list[StoredRun]:
    """Three runs: fast bridge, slow bridge, a veth run without tags."""
    fast = synthetic_run(tmp_path, np.full(200, 20_000), name="br-fast", tags=("bridge", "tuned"))
    slow = synthetic_run(tmp_path, np.full(200, 80_000), name="br-slow", tags=("bridge",))
    plain = synthetic_run(tmp_path, np.full(200, 50_000), name="veth-1")
    return [fast, slow, plain]


def _names(runs: list[StoredRun], *where: str) -> list[str]:
    return [r.record.name for r in catalog.select(runs, [catalog.parse_filter(w) for w in where])]


def test_tag_filters(runs: list[StoredRun]) -> None:
    """tag=X keeps runs carrying X (globs allowed); tag!=X keeps the others, untagged ones included."""
    assert _names(runs, "tag=bridge") == ["br-fast", "br-slow"]
    assert _names(runs, "tag=tun*") == ["br-fast"]
    assert _names(runs, "tag!=bridge") == ["veth-1"]
    assert _names(runs, "tags=bridge", "tag=tuned") == ["br-fast"]


def test_name_glob_and_regex(runs: list[StoredRun]) -> None:
    """= matches globs against the whole value, ~ searches a regular expression."""
    assert _names(runs, "name=br-*") == ["br-fast", "br-slow"]
    assert _names(runs, "name=br") == []
    assert _names(runs, "name~slow|veth") == ["br-slow", "veth-1"]


def test_numeric_comparisons_with_units(runs: list[StoredRun]) -> None:
    """Numbers compare numerically; a *_us key also takes a value with a unit (50us, 0.05ms)."""
    assert _names(runs, "latency_p99_us<50") == ["br-fast"]
    assert _names(runs, "latency_p99_us<=50") == ["br-fast", "veth-1"]
    assert _names(runs, "latency_max_us>0.06ms") == ["br-slow"]
    assert _names(runs, "latency_avg_us=80") == ["br-slow"]
    assert _names(runs, "sent>=200", "lost=0") == ["br-fast", "br-slow", "veth-1"]


def test_source_status_and_dotted_paths(runs: list[StoredRun]) -> None:
    """source, status and any run.json path (config.period_ns, source.kind) can be filtered."""
    assert _names(runs, "source=synthetic", "status=complete") == ["br-fast", "br-slow", "veth-1"]
    assert _names(runs, "config.period_ns=1000000") == ["br-fast", "br-slow", "veth-1"]
    assert _names(runs, "config.topology!=synthetic") == []
    assert _names(runs, "source=imported") == []


def test_created_compares_as_iso_text(runs: list[StoredRun]) -> None:
    """created >= a date keeps runs from that day on (ISO 8601 sorts as text)."""
    day = runs[0].record.created[:10]
    assert len(_names(runs, f"created>={day}")) == 3
    assert _names(runs, "created<2000-01-01") == []


def test_missing_values_match_only_not_equal(runs: list[StoredRun]) -> None:
    """A run lacking the key (tool is unset for measured runs) passes only !=."""
    assert _names(runs, "tool=irtt") == []
    assert _names(runs, "tool!=irtt") == ["br-fast", "br-slow", "veth-1"]
    assert _names(runs, "config.nonexistent<5") == []


@pytest.mark.parametrize(("text", "needle"), [
    ("tag", "expected KEY=VALUE"),
    ("=x", "expected KEY=VALUE"),
    ("colour=red", "unknown key 'colour'"),
    ("latency_p99_us<fast", "not a number"),
    ("name~(", "bad regular expression"),
])
def test_bad_filters(text: str, needle: str) -> None:
    """Malformed filters, unknown keys, non-numbers and broken regexes are usage errors."""
    with pytest.raises(ConfigError, match=needle):
        catalog.parse_filter(text)


def test_sort(runs: list[StoredRun]) -> None:
    """--sort KEY ascends, -KEY descends, runs without the key go last."""
    assert [r.record.name for r in catalog.sort_runs(runs, "-latency_max_us")] == ["br-slow", "veth-1", "br-fast"]
    assert [r.record.name for r in catalog.sort_runs(runs, "name")] == ["br-fast", "br-slow", "veth-1"]
    assert [r.record.name for r in catalog.sort_runs(runs, "tool")] == ["br-fast", "br-slow", "veth-1"]
    with pytest.raises(ConfigError):
        catalog.sort_runs(runs, "nope")


def test_run_row_carries_summary_statistics(runs: list[StoredRun]) -> None:
    """The flat row has identity, packet counts and <metric>_<stat>_us for every summary metric."""
    row = catalog.run_row(runs[1])
    assert row["name"] == "br-slow" and row["tags"] == ["bridge"] and row["source"] == "synthetic"
    assert row["latency_p99_us"] == 80.0 and row["sent"] == 200 and row["latency_count"] == 200
    assert "e2e_max_us" in row and "wakeup_latency_p50_us" in row
