"""Text sections: anomalies grouped by kind, worst packets with seq and time, check lines."""

from __future__ import annotations

from latscope.analysis.anomalies import Anomaly
from latscope.analysis.check import judge, parse_limit
from latscope.report.tables import anomalies_text, check_text, worst_text


def _spike(t: float, peak: float) -> Anomaly:
    return Anomaly("spike", t, t, f"spike at {t}", packets=1, seq_first=int(t * 1000), seq_last=int(t * 1000),
                   peak_us=peak)


def test_many_spikes_fold_into_one_line_naming_the_largest() -> None:
    """Hundreds of spikes are counted on one entry with the five largest by seq and time."""
    lines = anomalies_text([_spike(float(i), 100.0 + i) for i in range(300)])
    text = "\n".join(lines)
    assert lines[0] == "anomalies (300):"
    assert "[spike] 300 between 0.000 and 299.000 s" in text and "#299000 at 299.000 s (399.000 us)" in text


def test_few_anomalies_each_get_their_explanation() -> None:
    """Up to three of a kind are listed one by one; none at all says so."""
    text = "\n".join(anomalies_text([_spike(1.0, 200.0), _spike(2.0, 300.0)]))
    assert "spike at 1.0" in text and "spike at 2.0" in text
    assert anomalies_text([]) == ["anomalies: none found"]


def test_worst_table() -> None:
    """seq, time and value columns."""
    lines = worst_text([{"seq": 42, "at_s": 1.5, "value_us": 99.5}], "latency")
    assert lines[0] == "worst 1 packets by latency:" and "42" in lines[2] and "1.500000" in lines[2]


def test_check_lines() -> None:
    """ok/FAIL, the value found, the comparison and the limit as typed."""
    verdicts = judge([parse_limit("p99.9=150us"), parse_limit("loss=0")],
                     {"packets": {"lost": 2, "sent": 10}, "latency_us": {"p999": 120.0}})
    lines = check_text("r", "r", verdicts)
    assert lines[0] == "check r: 2 limits, 1 broken"
    assert lines[1].startswith("  ok    latency p99.9 = 120.000 us <= 150.000 us")
    assert lines[2].startswith("  FAIL  loss = 2 packets > 0 packets")
