"""CPU model and count, online CPUs, clocksource and frequency governors."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from latscope.env.roots import Roots


def collect(roots: Roots) -> dict[str, Any]:
    model = None
    info = roots.read(roots.proc / "cpuinfo") or ""
    for line in info.splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    cpu_dir = roots.sys / "devices" / "system" / "cpu"
    governors: Counter[str] = Counter()
    try:
        entries = sorted(p for p in cpu_dir.iterdir() if p.name.startswith("cpu") and p.name[3:].isdigit())
    except OSError:
        entries = []
    for p in entries:
        gov = roots.read(p / "cpufreq" / "scaling_governor")
        if gov:
            governors[gov] += 1
    clock_dir = roots.sys / "devices" / "system" / "clocksource" / "clocksource0"
    return {
        "model": model,
        "count": os.cpu_count(),
        "online": roots.read(cpu_dir / "online"),
        "isolated": roots.read(cpu_dir / "isolated") or "",
        "nohz_full": roots.read(cpu_dir / "nohz_full") or "",
        "clocksource": roots.read(clock_dir / "current_clocksource"),
        "clocksources_available": (roots.read(clock_dir / "available_clocksource") or "").split(),
        "governor": dict(governors) or None,
    }
