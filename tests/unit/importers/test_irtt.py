"""irtt JSON: each --metric stores exactly irtt's own per-packet delays; loss follows irtt's lost field."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from latscope.analysis import metrics
from latscope.errors import ConfigError, FormatError
from latscope.importers import irtt
from latscope.importers.common import RawFile, read_file
from latscope.store.samples import FLAG_LOST, Samples
from tests.unit.importers.conftest import IMPORT

LOSSY = IMPORT / "irtt-veth-loss.json"


@pytest.fixture(scope="module")
def doc() -> dict:
    return json.loads(LOSSY.read_text())


def _delays(doc: dict, key: str) -> np.ndarray:
    return np.array([rt["delay"].get(key, np.nan) for rt in doc["round_trips"]], dtype=float)


def _raw(obj) -> RawFile:
    data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return RawFile.of_bytes(Path("t.json"), data)


def test_one_way_is_irtt_send_delay(doc: dict) -> None:
    """Default with server timestamps: client->server; latency per packet equals irtt's "send" delay."""
    imp = irtt.parse(read_file(LOSSY))
    assert imp.source["irtt_metric"] == "one-way" and imp.source["metric"] == "one-way latency"
    lat = metrics.latency(Samples(imp.columns))
    assert list(imp.columns["seq"]) == [rt["seqno"] for rt in doc["round_trips"]]
    np.testing.assert_array_equal(lat, _delays(doc, "send"))


def test_one_way_loss_follows_lost_field(doc: dict) -> None:
    """true_up packets are lost; true_down ones reached the server, untimed: received, rx timestamp missing."""
    imp = irtt.parse(read_file(LOSSY))
    lost = np.array([rt["lost"] for rt in doc["round_trips"]])
    flagged = (imp.columns["flags"] & FLAG_LOST) != 0
    assert (flagged == (lost == "true_up")).all()
    assert imp.counts["lost"] == 7 and imp.counts["received"] == 193 and imp.counts["missing_rx_timestamps"] == 12


def test_one_way_down_is_irtt_receive_delay(doc: dict) -> None:
    """one-way-down: server->client replies of packets that reached the server; true_down replies are lost."""
    imp = irtt.parse(read_file(LOSSY), "one-way-down")
    lost = np.array([rt["lost"] for rt in doc["round_trips"]])
    reached = (lost == "false") | (lost == "true_down")
    np.testing.assert_array_equal(metrics.latency(Samples(imp.columns)), _delays(doc, "receive")[reached])
    assert imp.counts["sent"] == int(reached.sum()) and imp.counts["lost"] == 12


@pytest.mark.parametrize(("metric", "div"), [("half-rtt", 2), ("rtt", 1)])
def test_round_trip_metrics(doc: dict, metric: str, div: int) -> None:
    """half-rtt stores RTT // 2, rtt the whole RTT; the run says it is a round trip."""
    imp = irtt.parse(read_file(LOSSY), metric)
    rtt = _delays(doc, "rtt")
    expect = np.where(np.isnan(rtt), np.nan, np.floor(np.nan_to_num(rtt) / div))
    np.testing.assert_array_equal(metrics.latency(Samples(imp.columns)), expect)
    assert imp.source["metric"] == "round-trip" and imp.counts["lost"] == 19


def test_schedule_is_rebuilt_on_the_interval_grid(doc: dict) -> None:
    """sched_ns sits on start + k * interval and within half an interval of each send."""
    imp = irtt.parse(read_file(LOSSY))
    c, interval = imp.columns, doc["config"]["params"]["interval"]
    start = (c["sched_ns"] - c["sched_ns"][0]) % interval
    assert (start == 0).all()
    assert (np.abs(c["send_ns"] - c["sched_ns"]) <= interval // 2).all()
    assert imp.config["period_ns"] == interval and imp.started.startswith("20")


def test_gzipped_default_output() -> None:
    """irtt's default .json.gz output is read as is."""
    imp = irtt.parse(read_file(IMPORT / "irtt-lo.json.gz"))
    assert imp.counts["sent"] == 100 and imp.counts["lost"] == 0


def test_midpoint_stamps_give_no_one_way() -> None:
    """With --tstamp=midpoint the default is half-rtt, and asking for one-way is refused with a hint."""
    raw = read_file(IMPORT / "irtt-lo-midpoint.json")
    assert irtt.parse(raw).source["irtt_metric"] == "half-rtt"
    with pytest.raises(ConfigError, match="half-rtt"):
        irtt.parse(raw, "one-way")


def _edit(doc: dict, fn) -> dict:
    d = json.loads(json.dumps(doc))
    fn(d)
    return d


@pytest.mark.parametrize(("make", "needle"), [
    (lambda d: b"not json at all", "not valid irtt JSON"),
    (lambda d: LOSSY.read_bytes()[:5000], "not valid irtt JSON"),
    (lambda d: gzip.compress(b"[1, 2]"), "no round_trips"),
    (lambda d: _edit(d, lambda x: x.__setitem__("round_trips", [])), "no round trips"),
    (lambda d: _edit(d, lambda x: x["version"].__setitem__("json_format", 2)), "format 2"),
    (lambda d: _edit(d, lambda x: x["round_trips"][3]["timestamps"]["client"].__setitem__("send", {})),
     "#3 has no client send"),
    (lambda d: _edit(d, lambda x: x["round_trips"][5].__setitem__("lost", "maybe")), "#5 is malformed"),
    (lambda d: _edit(d, lambda x: x["round_trips"][5].__setitem__("seqno", 4)), "seqno appears twice"),
    (lambda d: _edit(d, lambda x: x["config"]["params"].__setitem__("interval", "10ms")), "interval"),
])
def test_malformed_results(doc: dict, make, needle: str) -> None:
    """Broken JSON, truncation, unknown format versions and damaged round trips: one FormatError."""
    obj = make(doc)
    raw = _raw(obj) if not (isinstance(obj, bytes) and obj[:2] == b"\x1f\x8b") else RawFile.of_bytes(
        Path("t.json.gz"), gzip.decompress(obj), size=len(obj), gzipped=True)
    with pytest.raises(FormatError, match=needle):
        irtt.parse(raw)


def test_unknown_metric() -> None:
    """A metric irtt cannot give is a usage error."""
    with pytest.raises(ConfigError, match="one of"):
        irtt.parse(read_file(LOSSY), "p99")
