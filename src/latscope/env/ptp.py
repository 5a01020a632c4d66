"""PTP hardware clocks (/sys/class/ptp): what could give hardware timestamps a time base."""

from __future__ import annotations

from typing import Any

from latscope.env.roots import Roots


def collect(roots: Roots) -> dict[str, Any]:
    base = roots.sys / "class" / "ptp"
    clocks = []
    try:
        entries = sorted(base.iterdir())
    except OSError:
        entries = []
    for p in entries:
        clocks.append({"name": p.name, "clock_name": roots.read(p / "clock_name")})
    return {"clocks": clocks}
