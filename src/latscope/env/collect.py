"""All collectors together: the environment document stored in run.json."""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
from collections.abc import Callable
from typing import Any

from latscope.env import cpu, kernel, kvm, net, ptp, qdisc, tracing, version, virt
from latscope.env.roots import DEFAULT, Roots
from latscope.timebase import tai_offset_ns


def _time() -> dict[str, Any]:
    return {
        "captured_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "tai_offset_s": tai_offset_ns() // 1_000_000_000,
    }


def collect_environment(roots: Roots = DEFAULT, *, probe_qdiscs: bool = True) -> dict[str, Any]:
    """Every collector's section; a collector that fails records its error instead of stopping the run."""
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "kernel": lambda: kernel.collect(roots),
        "cpu": lambda: cpu.collect(roots),
        "net": net.collect,
        "ptp": lambda: ptp.collect(roots),
        "tracing": lambda: tracing.collect(roots),
        "kvm": lambda: kvm.collect(roots),
        "virt": lambda: virt.collect(roots),
        "latscope": version.collect,
        "time": _time,
        "user": lambda: {"euid": os.geteuid()},
    }
    if probe_qdiscs:
        sections["qdisc"] = qdisc.collect
    out: dict[str, Any] = {}
    for key, fn in sections.items():
        try:
            out[key] = fn()
        except (OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
            out[key] = {"error": f"{type(exc).__name__}: {exc}"}
    return out
