"""Limits parse as users type them and judge a summary the way a CI gate must."""

from __future__ import annotations

import pytest

from latscope.analysis.check import judge, metrics_needed, parse_limit
from latscope.errors import ConfigError

SUMMARY = {
    "packets": {"sent": 1000, "lost": 3},
    "latency_us": {"p999": 120.0, "max": 180.0, "min": 5.0, "p99999": None},
    "delta_us": {"p99": 1100.0},
}


def test_parse_forms() -> None:
    """p99.9=150us, latency.max=1ms, delta.p99=1.1ms, loss=0 and loss=0.5% all parse to µs, packets or %."""
    lim = parse_limit("p99.9=150us")
    assert (lim.metric, lim.stat, lim.value, lim.unit) == ("latency", "p999", 150.0, "us")
    assert parse_limit("latency.max=1ms").value == 1000.0
    assert (parse_limit("delta.p99=1.1ms").metric, parse_limit("delta.p99=1.1ms").value) == ("delta", 1100.0)
    assert (parse_limit("loss=0").stat, parse_limit("loss=0").value) == ("count", 0.0)
    assert (parse_limit("loss=0.5%").stat, parse_limit("loss=0.5%").unit) == ("percent", "%")


@pytest.mark.parametrize("text", ["p99.9", "p99.9=150", "p42=1us", "bogus.max=1us", "loss=-1", "loss=1.5",
                                  "=3us", "p99=fast"])
def test_bad_limits_are_usage_errors(text: str) -> None:
    """Missing units, unknown statistics or metrics and impossible loss values are ConfigErrors."""
    with pytest.raises(ConfigError):
        parse_limit(text)


def test_judge() -> None:
    """max limits hold at or below, min limits at or above; a missing statistic breaks its limit."""
    limits = [parse_limit("p99.9=150us"), parse_limit("max=150us"), parse_limit("loss=0"),
              parse_limit("loss=0.5%"), parse_limit("p99.999=1ms"), parse_limit("min=5us", "min"),
              parse_limit("delta.p99=1ms")]
    assert [v.ok for v in judge(limits, SUMMARY)] == [True, False, False, True, False, True, False]
    assert judge([parse_limit("loss=0.5%")], SUMMARY)[0].actual == pytest.approx(0.3)


def test_metrics_needed() -> None:
    """Only the metrics named are computed (latency always)."""
    assert metrics_needed([parse_limit("delta.max=1ms"), parse_limit("loss=0")]) == ("latency", "delta")
