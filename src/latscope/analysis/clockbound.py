"""How far apart the two ends' clocks may be during a one-way run, and whether that matters (docs/clock.md).

A one-way latency is t_receive (receiver's clock) - t_send (sender's clock):
any disagreement of the clocks lands in it whole. The bound comes from, in
order of strength:

- one clock: both ends on this host (veth, bridge, loopback...): 0;
- a VM guest: latscope's own clock exchange corrects the guest's times, to
  its uncertainty;
- a burst of round trips between the ends just before the run
  (analysis.roundtrip): the clocks differ by |offset| + bound at most;
- each host's synchronisation (env.clock: ptp4l's offset from master,
  chrony's bound, the kernel's maxerror): their sum, both measured against
  a common reference.

The smallest bound that is available wins: each is a valid bound on its own.
"""

from __future__ import annotations

from typing import Any

#: Topologies whose two ends read the same clock (one host, one kernel).
SAME_CLOCK_TOPOLOGIES = frozenset({"loopback", "veth", "bridge", "macvlan", "vxlan", "xdp", "tap", "ovs"})
#: A run is flagged when its clock error bound exceeds this fraction of its median latency.
FLAG_FRACTION = 0.1


def assess(hosts: dict[str, dict[str, Any]], *, same_clock: bool, rtt: dict[str, Any] | None = None,
           guest_bound_ns: int | None = None) -> dict[str, Any]:
    """The clock check of a run: ``bound_ns`` (None: unknown), its ``basis``, and everything it came from."""
    candidates: list[tuple[int, str]] = []
    if same_clock:
        candidates.append((0, "one clock: both ends on this host"))
    if guest_bound_ns is not None:
        candidates.append((int(guest_bound_ns), "guest clock exchange (corrected, +- its uncertainty)"))
    if rtt is not None:
        candidates.append((abs(int(rtt["offset_ns"])) + int(rtt["bound_ns"]),
                           f"round trips before the run: offset {rtt['offset_ns']} +- {rtt['bound_ns']} ns"))
    bounds = [h.get("bound_ns") for h in hosts.values()]
    if len(hosts) >= 2 and all(b is not None for b in bounds):
        candidates.append((sum(int(b) for b in bounds if b is not None),
                           "sum of both hosts' synchronisation bounds"))
    doc: dict[str, Any] = {"hosts": hosts, "rtt": rtt}
    if candidates:
        doc["bound_ns"], doc["basis"] = min(candidates)
    else:
        doc["bound_ns"], doc["basis"] = None, "no bound: the far end's clock is unknown"
    return doc


def flag(check: dict[str, Any], latency_p50_us: float | None, fraction: float = FLAG_FRACTION) -> dict[str, Any]:
    """``check`` with ``flagged`` (bound unknown, or above ``fraction`` of the median latency) and ``line``."""
    bound = check.get("bound_ns")
    flagged = bound is None or (latency_p50_us is not None and bound / 1000 > fraction * abs(latency_p50_us))
    what = "unknown" if bound is None else f"{bound / 1000:.3f} us"
    line = f"clock error bound {what} ({check.get('basis')})"
    if flagged:
        line += (f"; FLAGGED: larger than {fraction:.0%} of the median latency, one-way figures may be off by "
                 "that much" if bound is not None else "; FLAGGED: one-way figures cannot be trusted")
    line += "; " + "; ".join(f"{name}: {host_line(h)}" for name, h in check.get("hosts", {}).items())
    return {**check, "flagged": flagged, "fraction": fraction, "line": line}


def host_line(doc: dict[str, Any]) -> str:
    """One host's clock in a few words: kernel flag, chrony, ptp4l."""
    kernel = doc.get("adjtimex") or {}
    parts = ["kernel " + ("unsynchronised" if kernel.get("unsynchronised") else
                          f"synchronised (maxerror {kernel.get('maxerror_us')} us)" if kernel else "?")]
    ch = doc.get("chrony") or {}
    if ch.get("running"):
        parts.append("chrony " + (f"bound {ch['bound_ns'] / 1000:.3f} us" if ch.get("bound_ns") is not None
                                  else ch.get("error", "?")))
    ptp = doc.get("ptp") or {}
    if ptp.get("running"):
        parts.append(f"ptp4l {ptp.get('port_state')} offset {ptp.get('offset_from_master_ns')} ns"
                     if not ptp.get("error") else f"ptp4l {ptp['error']}")
    return ", ".join(parts)


def refusal(check: dict[str, Any], required_ns: int) -> str | None:
    """Why --require-sync refuses this run (one line), None when the bound is within ``required_ns``."""
    bound = check.get("bound_ns")
    if bound is not None and bound <= required_ns:
        return None
    have = "cannot be bounded" if bound is None else f"is {bound / 1000:.3f} us"
    return (f"--require-sync {required_ns / 1000:g}us: the clock error between the two ends {have} "
            f"({check.get('basis')}); nothing was measured")
