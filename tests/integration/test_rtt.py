"""`run --mode rtt` end to end as root: a reflector in one namespace, round trips on veth, one clock."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from latscope.analysis import metrics
from latscope.store.samples import MISSING, read_samples

pytestmark = [pytest.mark.root, pytest.mark.slow]

COUNT = 3000


def _run(latscope, *args: str) -> dict:
    r = latscope("run", "--count", str(COUNT), "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _iqr(values: np.ndarray) -> float:
    q1, q3 = np.percentile(values[~np.isnan(values)], [25, 75])
    return float(q3 - q1)


def test_rtt_on_one_clock_agrees_with_one_way(latscope) -> None:
    """Every round trip comes back with its four timestamps; the offset estimate brackets 0 (one clock);
    RTT/2 agrees with the one-way path delay measured alone, within the runs' own spread."""
    rtt_doc = _run(latscope, "--mode", "rtt", "--name", "rtt")
    assert rtt_doc["source"]["metric"] == "round-trip"
    assert rtt_doc["packets"]["received"] == COUNT and rtt_doc["packets"]["lost"] == 0
    assert rtt_doc["completeness"]["missing_far_timestamps"] == 0
    assert rtt_doc["capture"]["receiver"]["echoed"] == COUNT
    clock = rtt_doc["round_trip"]["clock"]
    # One clock: the true offset is 0, and causality puts it inside the bound.
    assert abs(clock["offset_ns"]) <= clock["bound_ns"]
    assert clock["round_trips"] == COUNT
    s = read_samples(Path(rtt_doc["path"]) / "samples.parquet")
    assert np.all(s["far_rx_ns"] != MISSING) and np.all(s["far_tx_ns"] != MISSING)
    # Causal order on one clock: t1 <= t2 <= t3 <= t4 for every packet.
    t1 = metrics.t1(s)
    assert np.all(t1 <= s["far_rx_ns"]) and np.all(s["far_rx_ns"] <= s["far_tx_ns"])
    assert np.all(s["far_tx_ns"] <= s["rx_sw_ns"])
    half_rtt = metrics.rtt(s) / 2
    # On one clock t2 - t1 is a true one-way delay inside the same run: the same path as RTT/2's outbound half.
    forward = metrics.forward_delay(s)
    assert abs(np.median(half_rtt) - np.median(forward)) <= _iqr(half_rtt) + _iqr(forward)

    one_doc = _run(latscope, "--name", "oneway")
    assert "round_trip" not in one_doc and one_doc["source"]["metric"] == "one-way latency"
    o = read_samples(Path(one_doc["path"]) / "samples.parquet")
    assert np.all(o["far_rx_ns"] == MISSING)
    # Kernel TX to kernel RX, as the round trip's legs are: path_delay is the one-way figure to compare.
    path = metrics.path_delay(o)
    assert abs(np.median(half_rtt) - np.median(path)) <= _iqr(half_rtt) + _iqr(path), \
        (np.median(half_rtt), np.median(path))

    # The verbs that read runs work on round trips.
    show = latscope("show", "rtt")
    assert show.returncode == 0 and "round trip: latency = RTT" in show.stdout and "far clock offset" in show.stdout
    shown = json.loads(latscope("show", "rtt", "--json", "--metric", "turnaround").stdout)
    assert shown["round_trip"]["clock"] == clock
    assert latscope("compare", "rtt", "oneway").returncode == 0
    report = latscope("report", "rtt", "oneway", "-o", str(Path(rtt_doc["path"]).parent / "r.html"))
    assert report.returncode == 0, report.stderr


def test_rtt_refuses_what_it_cannot_do(latscope) -> None:
    """Raw Ethernet and --require-sync with round trips are usage errors (exit 2), nothing set up."""
    for extra in (["--l2"], ["--require-sync", "10us"]):
        r = latscope("run", "--mode", "rtt", "--count", "10", *extra)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr


def test_require_sync(latscope, results: Path) -> None:
    """One clock passes any --require-sync (the burst of round trips is recorded); an unknown far clock is
    refused with exit 1 before anything is sent or stored."""
    doc = _run(latscope, "--require-sync", "1us")
    check = doc["clock_check"]
    assert check["bound_ns"] == 0 and not check["flagged"]
    assert abs(check["rtt"]["offset_ns"]) <= check["rtt"]["bound_ns"]
    assert check["hosts"]["local"]["adjtimex"]["state"]
    r = latscope("run", "--topology", "none", "--dest", "198.18.0.1:9", "--count", "10", "--require-sync", "10us")
    assert r.returncode == 1 and "cannot be bounded" in r.stderr and r.stderr.count("\n") == 1
    assert len([p for p in results.iterdir() if not p.name.startswith(".")]) == 1
