"""Hardware timestamping is switched on only where a device has it, and never fails a run."""

from __future__ import annotations

import socket

from latscope.env import ethtool
from latscope.probe.hwstamp import hardware_timestamping


def test_not_requested() -> None:
    """Without an interface, or with --no-hw-timestamps, nothing is touched."""
    with hardware_timestamping(None, True) as r:
        assert r["state"] == "not requested"
    with hardware_timestamping("lo", False) as r:
        assert r["state"] == "not requested"


def test_loopback_has_software_only() -> None:
    """lo reports software timestamping only: the run goes on with software timestamps."""
    with hardware_timestamping("lo", True) as r:
        assert r["state"].startswith("software only")


def test_loopback_capabilities_and_no_hwtstamp_ioctl() -> None:
    """ethtool says lo stamps in software; the hwtstamp ioctl is refused, as on every virtual device."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        caps = ethtool.timestamping(s, "lo")
        assert caps is not None and caps["rx_software"] and not caps["hardware"]
        try:
            ethtool.hwtstamp_get(s, "lo")
            refused = False
        except OSError:
            refused = True
        assert refused
