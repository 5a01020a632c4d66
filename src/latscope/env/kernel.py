"""Kernel release, preemption model and the boot parameters that matter for latency."""

from __future__ import annotations

import gzip
import os
import re
from typing import Any

from latscope.env.roots import Roots

CMDLINE_KEYS = ("isolcpus", "nohz_full", "irqaffinity", "rcu_nocbs", "nohz", "idle", "processor.max_cstate",
                "intel_idle.max_cstate", "mitigations", "preempt", "threadirqs", "skew_tick")


def preempt_model(roots: Roots, version: str) -> str:
    """PREEMPT_RT, full, voluntary, none or dynamic (with the current mode where visible)."""
    if roots.read(roots.sys / "kernel" / "realtime") == "1" or "PREEMPT_RT" in version:
        return "PREEMPT_RT"
    current = roots.read(roots.sys / "kernel" / "debug" / "sched" / "preempt")
    if current:
        m = re.search(r"\((\w+)\)", current)
        if m:
            return f"dynamic ({m.group(1)})"
    if "PREEMPT_DYNAMIC" in version:
        return "dynamic"
    if "PREEMPT" in version:
        return "full"
    config = kernel_config(roots)
    if config.get("CONFIG_PREEMPT_VOLUNTARY") == "y":
        return "voluntary"
    if config.get("CONFIG_PREEMPT_NONE") == "y":
        return "none"
    return "unknown"


def kernel_config(roots: Roots) -> dict[str, str]:
    """/proc/config.gz as a dict (empty when the kernel does not expose it)."""
    try:
        with gzip.open(roots.proc / "config.gz", "rt") as fh:
            text = fh.read()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            k, _, v = line.partition("=")
            out[k] = v
    return out


def cmdline_params(cmdline: str) -> dict[str, str]:
    """The latency-relevant kernel parameters of a command line (value "" for flags)."""
    out = {}
    for token in cmdline.split():
        if token == "--":
            break
        key, _, value = token.partition("=")
        if key in CMDLINE_KEYS:
            out[key] = value
    return out


def collect(roots: Roots) -> dict[str, Any]:
    uname = os.uname()
    cmdline = roots.read(roots.proc / "cmdline") or ""
    return {
        "release": uname.release,
        "version": uname.version,
        "machine": uname.machine,
        "hostname": uname.nodename,
        "preempt_model": preempt_model(roots, uname.version),
        "cmdline": cmdline,
        "cmdline_params": cmdline_params(cmdline),
    }
