"""Environment differences list what changed between runs, not what changes every time."""

from __future__ import annotations

from latscope.analysis.envdiff import differences, flatten


def test_flatten_keys_lists_of_named_items_by_name() -> None:
    """Interfaces are keyed by name, other lists stay whole."""
    flat = flatten({"net": {"interfaces": [{"name": "eth0", "mtu": 1500}]}, "cpu": {"flags": ["a", "b"]}})
    assert flat == {"net.interfaces[eth0].mtu": 1500, "cpu.flags": '["a", "b"]'}


def test_differences_skip_volatile_keys() -> None:
    """Kernel and period differences are listed; pids, capture times and stream ids are not."""
    a = {"config": {"period_ns": 1_000_000, "stream": 1},
         "environment": {"before": {"kernel": {"release": "6.1"}, "time": {"captured_at": "x"}},
                         "workers": {"sender": {"pid": 1}}}}
    b = {"config": {"period_ns": 200_000, "stream": 2},
         "environment": {"before": {"kernel": {"release": "6.18"}, "time": {"captured_at": "y"}},
                         "workers": {"sender": {"pid": 2}}}}
    diffs = {d.key: d.values for d in differences([a, b])}
    assert diffs == {"config.period_ns": (1_000_000, 200_000), "environment.before.kernel.release": ("6.1", "6.18")}


def test_key_missing_in_one_run() -> None:
    """A key only one run has is a difference, with None for the other."""
    diffs = differences([{"config": {"cpu_send": 2}}, {"config": {}}])
    assert [(d.key, d.values) for d in diffs] == [("config.cpu_send", (2, None))]


def test_source_metric_is_a_listed_difference() -> None:
    """A one-way run against a round-trip import lists source.metric and warns that metrics mix."""
    from types import SimpleNamespace

    from latscope.analysis.envdiff import metric_mismatch, setup_document

    a = SimpleNamespace(source={"kind": "measured", "metric": "one-way latency"}, config={}, environment={})
    b = SimpleNamespace(source={"kind": "imported", "tool": "irtt", "metric": "round-trip"}, config={},
                        environment={})
    keys = {d.key for d in differences([setup_document(a), setup_document(b)])}
    assert {"source.metric", "source.kind", "source.tool"} <= keys
    assert "round-trip" in (metric_mismatch([a, b]) or "")
    assert metric_mismatch([a, a]) is None
