"""Environment collectors read /proc and /sys through a root that tests point at a fake tree."""

from __future__ import annotations

import gzip
from pathlib import Path

from latscope.env import cpu, kernel, ptp, tracing
from latscope.env.roots import Roots


def _tree(tmp_path: Path) -> Roots:
    proc, sys_, trace = tmp_path / "proc", tmp_path / "sys", tmp_path / "trace"
    (proc).mkdir()
    (proc / "cmdline").write_text("BOOT_IMAGE=/vmlinuz root=/dev/sda isolcpus=2,3 nohz_full=2-3 quiet -- x=y\n")
    (proc / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Test CPU @ 3.0GHz\n\nprocessor\t: 1\n")
    with gzip.open(proc / "config.gz", "wt") as fh:
        fh.write("CONFIG_PREEMPT_VOLUNTARY=y\n# CONFIG_PREEMPT is not set\n")
    cpus = sys_ / "devices" / "system" / "cpu"
    for i in range(2):
        (cpus / f"cpu{i}" / "cpufreq").mkdir(parents=True)
        (cpus / f"cpu{i}" / "cpufreq" / "scaling_governor").write_text("performance\n")
    (cpus / "online").write_text("0-1\n")
    (cpus / "isolated").write_text("\n")
    cs = sys_ / "devices" / "system" / "clocksource" / "clocksource0"
    cs.mkdir(parents=True)
    (cs / "current_clocksource").write_text("tsc\n")
    (cs / "available_clocksource").write_text("tsc hpet acpi_pm\n")
    (sys_ / "class" / "ptp" / "ptp0").mkdir(parents=True)
    (sys_ / "class" / "ptp" / "ptp0" / "clock_name").write_text("igb\n")
    (trace / "events" / "sched").mkdir(parents=True)
    (trace / "events" / "irq").mkdir()
    (trace / "instances").mkdir()
    (trace / "trace_clock").write_text("[local] global mono tai\n")
    (trace / "available_tracers").write_text("function nop\n")
    return Roots(proc=proc, sys=sys_, dev=tmp_path / "dev", tracefs=trace)


def test_kernel_params_and_preempt_from_config(tmp_path: Path) -> None:
    """Latency-relevant boot parameters are picked out; the preempt model falls back to the config."""
    roots = _tree(tmp_path)
    assert kernel.cmdline_params((roots.proc / "cmdline").read_text()) == {"isolcpus": "2,3", "nohz_full": "2-3"}
    assert kernel.preempt_model(roots, "#1 SMP") == "voluntary"
    assert kernel.preempt_model(roots, "#1 SMP PREEMPT_RT") == "PREEMPT_RT"
    assert kernel.preempt_model(roots, "#1 SMP PREEMPT_DYNAMIC") == "dynamic"


def test_cpu_collector(tmp_path: Path) -> None:
    """Model, clocksource and governors come from the tree."""
    c = cpu.collect(_tree(tmp_path))
    assert c["model"] == "Test CPU @ 3.0GHz" and c["clocksource"] == "tsc"
    assert c["governor"] == {"performance": 2} and c["online"] == "0-1"
    assert c["clocksources_available"] == ["tsc", "hpet", "acpi_pm"]


def test_ptp_and_tracing(tmp_path: Path) -> None:
    """PTP clocks are listed; tracing reports its clocks and the event groups it lacks."""
    roots = _tree(tmp_path)
    assert ptp.collect(roots) == {"clocks": [{"name": "ptp0", "clock_name": "igb"}]}
    t = tracing.collect(roots)
    assert t["available"] and "tai" in t["clocks"] and "local" in t["clocks"]
    assert "net" in t["event_groups_missing"] and "sched" not in t["event_groups_missing"]


def test_missing_tree_is_not_an_error(tmp_path: Path) -> None:
    """An empty tree yields 'unknown'/None values rather than exceptions."""
    roots = Roots(proc=tmp_path / "p", sys=tmp_path / "s", dev=tmp_path / "d", tracefs=tmp_path / "t")
    assert cpu.collect(roots)["clocksource"] is None
    assert tracing.collect(roots)["available"] is False
    assert ptp.collect(roots) == {"clocks": []}
