"""The text summary, in the shape engineers already know from the kernel's sample apps."""

from __future__ import annotations

from typing import Any

from latscope.units import duration_words


def _line(stats: dict[str, Any], keys: tuple[str, ...]) -> str:
    return "/".join("-" if stats.get(k) is None else f"{stats[k]:.3f}" for k in keys)


def summary_text(summary: dict[str, Any], run_id: str | None = None, status: str | None = None,
                 context: list[str] | None = None, *, deep: bool = False) -> str:
    """The classic three lines, then percentiles, wakeup latency, packet counts, context lines and the run id.

    ``deep`` adds the latency p99.999 line after the percentiles (`show`, which recomputes it from the samples).
    """
    pk = summary["packets"]
    lat = summary["latency_us"]
    dlt = summary["delta_us"]
    lines = [
        f"Total: {pk['received']} packets (~= {duration_words(summary.get('duration_ns', 0))})",
        f"  latency min/avg/max/stddev (usec): {_line(lat, ('min', 'avg', 'max', 'stddev'))}",
        f"  delta min/avg/max/stdev (usec): {_line(dlt, ('min', 'avg', 'max', 'stddev'))}",
        f"  latency p50/p90/p99/p99.9/p99.99 (usec): {_line(lat, ('p50', 'p90', 'p99', 'p999', 'p9999'))}",
    ]
    if deep:
        lines.append(f"  latency p99.999 (usec): {_line(lat, ('p99999',))}")
    wake = summary.get("wakeup_latency_us") or {}
    if wake.get("count"):
        lines.append(
            f"  wakeup latency min/avg/max/p99 (usec): {_line(wake, ('min', 'avg', 'max', 'p99'))}"
        )
    arr = summary.get("arrival_latency_us") or {}
    if arr.get("count"):
        lines.append(
            f"  arrival latency min/avg/max/p99 (usec): {_line(arr, ('min', 'avg', 'max', 'p99'))}"
        )
    lines.append(
        "  packets: sent {sent}, received {received}, lost {lost}, duplicated {duplicated}, "
        "reordered {reordered}, foreign {foreign}".format(**pk)
    )
    worst = summary.get("worst") or []
    if worst:
        lines.append(
            "  worst latency (usec) by seq: "
            + ", ".join(f"#{w['seq']} {w['latency_us']:.3f}" for w in worst)
        )
    lines += round_trip_lines(summary)
    sched = summary.get("schedule") or {}
    if sched.get("missed_periods"):
        lines.append(f"  sender: {sched['missed_periods']} of {sched['scheduled']} packets sent a full period or "
                     "more after their scheduled time (missed periods)")
    steal = steal_line(summary.get("host_steal"))
    if steal:
        lines.append(steal)
    lines += context or []
    if run_id:
        suffix = f" ({status})" if status and status != "complete" else ""
        lines.append(f"  run: {run_id}{suffix}")
    return "\n".join(lines)


def round_trip_lines(summary: dict[str, Any]) -> list[str]:
    """A round-trip run's extra lines: what its latency is, the far end's turnaround, the one-way estimates."""
    rt = summary.get("round_trip")
    out: list[str] = []
    if rt:
        turn = rt.get("turnaround_us") or {}
        out.append("  round trip: latency = RTT = (t4 - t1) - (t3 - t2), kernel timestamps; far-end turnaround "
                   f"min/avg/max/p99 (usec): {_line(turn, ('min', 'avg', 'max', 'p99'))}")
        clock = rt.get("clock")
        if clock:
            fwd, rev = rt.get("forward_us") or {}, rt.get("reverse_us") or {}
            out.append(f"  one-way estimates p50/p99 (usec): forward {_line(fwd, ('p50', 'p99'))}, reverse "
                       f"{_line(rev, ('p50', 'p99'))}; far clock offset {clock['offset_ns'] / 1000:.3f} "
                       f"+- {clock['bound_ns'] / 1000:.3f} us ({clock['method']}, from "
                       f"{clock['round_trips']} round trips)")
    check = summary.get("clock_check")
    if check:
        out.append(f"  clock check: {check['line']}")
    return out


def steal_line(steal: dict[str, Any] | None) -> str | None:
    """"host steal: 12.5% of CPU 0, 3.1% of CPU 1 during the run", when the host took any CPU time."""
    cpus = (steal or {}).get("cpus") or {}
    if not any(c.get("steal_ns") for c in cpus.values()):
        return None
    parts = [(f"{c['percent']:.1f}%" if c["percent"] >= 0.05 or not c.get("steal_ns") else "<0.1%") + f" of CPU {cpu}"
             for cpu, c in sorted(cpus.items(), key=lambda kv: int(kv[0]))]
    return f"  host steal: {', '.join(parts)} during the run"


def context_lines(record: Any) -> list[str]:
    """What a reader must know to trust the numbers of a run: the VM, its accelerator, the clock."""
    vm = (record.extra or {}).get("vm")
    if not vm:
        return []
    direction = vm.get("direction") or "forward"
    arrow = "host -> guest" if direction == "forward" else "guest -> host"
    net = vm.get("network") or {}
    out = [(f"  vm: {arrow} over {net.get('variant', '?')}, {vm.get('accel')} "
           f"({'emulated CPU: not a hardware figure' if vm.get('emulated_cpu') else 'hardware-assisted'}), "
           f"guest cwd {((vm.get('cwd') or {}).get('kind'))}, root {(vm.get('options') or {}).get('root', '9p')}")]
    clock = (record.summary or {}).get("clock") or {}
    if clock:
        after = clock.get("offset_after_ns")
        drift = "" if after is None else f", {after / 1000:.1f} us after the run"
        out.append(f"  clock: guest minus host {clock['offset_ns'] / 1000:.1f} us before{drift}, corrected; "
                   f"uncertainty +-{clock['uncertainty_ns'] / 1000:.1f} us ({clock.get('method')})")
    if clock.get("warning"):
        out.append(f"  clock: {clock['warning']}")
    return out
