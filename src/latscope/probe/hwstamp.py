"""Switching a NIC's hardware timestamping on for a run, and back off afterwards.

Sockets only receive hardware timestamps when the driver has been told to
stamp (SIOCSHWTSTAMP). latscope asks for "TX on, RX all" on the interface a
half uses, where ethtool says the device can, and restores the previous
setting when the half ends. Nothing here is ever fatal: a device that cannot
stamp leaves the run on software timestamps, and the run records why.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from latscope.env import ethtool


@contextmanager
def hardware_timestamping(ifname: str | None, enabled: bool) -> Iterator[dict[str, Any]]:
    """Enable hardware timestamping on ``ifname`` for the ``with`` block; yield what happened."""
    report: dict[str, Any] = {"interface": ifname, "state": "not requested"}
    if not enabled or not ifname:
        yield report
        return
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        caps = ethtool.timestamping(sock, ifname)
        if not caps or not caps.get("hardware"):
            report["state"] = "software only (the device has no hardware timestamping)"
            yield report
            return
        try:
            before = ethtool.hwtstamp_get(sock, ifname)
        except OSError:
            before = (ethtool.HWTSTAMP_TX_OFF, ethtool.HWTSTAMP_FILTER_NONE)
        try:
            applied = ethtool.hwtstamp_set(sock, ifname, ethtool.HWTSTAMP_TX_ON, ethtool.HWTSTAMP_FILTER_ALL)
        except OSError as exc:
            report.update(state=f"not enabled: {exc.strerror}", before=list(before))
            yield report
            return
        report.update(state="enabled", before=list(before), applied=list(applied))
        try:
            yield report
        finally:
            if tuple(applied) != tuple(before):
                try:
                    ethtool.hwtstamp_set(sock, ifname, *before)
                    report["restored"] = True
                except OSError:
                    report["restored"] = False
