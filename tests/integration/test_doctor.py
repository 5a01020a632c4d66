"""`latscope doctor` on this very machine."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.root


def test_doctor_json_describes_this_host(latscope) -> None:
    """doctor --json finds root, the running kernel, loopback's software timestamps and no ETF qdisc here."""
    r = latscope("doctor", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["root"]["status"] == "ok"
    assert os.uname().release in checks["preemption"]["found"]
    lo = next(i for i in doc["environment"]["net"]["interfaces"] if i["name"] == "lo")
    assert lo["timestamping"]["rx_software"] is True and lo["qdisc"] == "noqueue"
    # The kernel of this machine has neither ETF nor taprio (the issue says so).
    assert doc["environment"]["qdisc"]["available"] == {"etf": False, "taprio": False}
    assert any("ETF" in line for line in doc["verdict"]["cannot"])
    assert doc["environment"]["latscope"]["version"]


def test_doctor_text_ends_with_verdict(latscope) -> None:
    """The text form lists checks, then what the host can and cannot measure."""
    r = latscope("doctor")
    assert r.returncode == 0, r.stderr
    assert "This host can measure:" in r.stdout and "It cannot measure:" in r.stdout
    assert r.stdout.index("[ok  ] root") < r.stdout.index("This host can measure:")
