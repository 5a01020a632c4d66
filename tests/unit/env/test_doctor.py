"""doctor's findings and verdict are derived from an environment document."""

from __future__ import annotations

from latscope.env.doctor import checks, has_failures, verdict

BASE = {
    "user": {"euid": 0},
    "kernel": {"release": "6.18", "preempt_model": "dynamic", "cmdline_params": {}},
    "cpu": {"count": 2, "model": "x", "clocksource": "tsc", "governor": None},
    "net": {"interfaces": [{"name": "lo", "timestamping": {"rx_software": True, "hardware": False}}]},
    "ptp": {"clocks": []},
    "tracing": {"available": True, "tracefs": "/sys/kernel/tracing", "clocks": ["local", "tai"],
                "event_groups_missing": []},
    "qdisc": {"available": {"etf": False, "taprio": False}},
    "kvm": {"opens": True},
}


def _by_name(env: dict) -> dict:
    return {c.name: c for c in checks(env)}


def test_this_kind_of_host() -> None:
    """Root, software timestamps only, tracing, no ETF: the verdict says exactly that."""
    found = checks(BASE)
    v = verdict(found)
    assert any("veth" in line for line in v["can"]) and any("traces" in line for line in v["can"])
    assert any("hardware" in line for line in v["cannot"]) and any("ETF" in line for line in v["cannot"])
    assert not has_failures(found)


def test_not_root_points_to_loopback() -> None:
    """Without root the root check warns and names the loopback topology."""
    c = _by_name({**BASE, "user": {"euid": 1000}})["root"]
    assert c.status == "warn" and "loopback" in c.meaning


def test_hardware_timestamps_and_ptp_detected() -> None:
    """An interface with hardware timestamping and a PTP clock are reported as such."""
    env = {**BASE, "net": {"interfaces": [{"name": "eth0", "timestamping": {"hardware": True,
                                                                            "rx_software": True}}]},
           "ptp": {"clocks": [{"name": "ptp0"}]}}
    found = _by_name(env)
    assert found["timestamps"].status == "ok" and "eth0" in found["timestamps"].found
    assert found["ptp"].status == "ok"
    assert any("hardware timestamps" in line for line in verdict(list(found.values()))["can"])


def test_missing_trace_groups_warn() -> None:
    """Missing event groups are named, and a missing tai clock is a warning of its own."""
    env = {**BASE, "tracing": {**BASE["tracing"], "event_groups_missing": ["napi"], "clocks": ["local"]}}
    found = _by_name(env)
    assert found["tracing"].status == "warn" and "napi" in found["tracing"].found
    assert found["trace clock"].status == "warn"
