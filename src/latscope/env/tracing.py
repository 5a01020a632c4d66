"""Is kernel tracing usable: tracefs mounted, the clocks and event groups latscope relies on."""

from __future__ import annotations

from typing import Any

from latscope.env.roots import Roots

WANTED_GROUPS = ("sched", "irq", "napi", "net", "skb", "qdisc", "sock", "syscalls", "timer", "block",
                 "workqueue", "jbd2", "kvm")


def collect(roots: Roots) -> dict[str, Any]:
    t = roots.tracefs
    clocks_text = roots.read(t / "trace_clock")
    available = clocks_text is not None
    groups: list[str] = []
    if available:
        try:
            groups = sorted(p.name for p in (t / "events").iterdir() if p.is_dir())
        except OSError:
            groups = []
    return {
        "tracefs": str(t),
        "available": available,
        "clocks": [c.strip("[]") for c in clocks_text.split()] if clocks_text else [],
        "instances": (t / "instances").is_dir() if available else False,
        "event_groups_missing": [g for g in WANTED_GROUPS if available and g not in groups],
        "tracers": (roots.read(t / "available_tracers") or "").split(),
    }
