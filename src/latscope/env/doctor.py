"""`latscope doctor`: what this host can and cannot measure, each check saying what it found."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"


@dataclass(frozen=True)
class Check:
    """One finding: a name, a status, what was found and what it means for measurements."""

    name: str
    status: str
    found: str
    meaning: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def checks(env: dict[str, Any]) -> list[Check]:
    """Findings derived from a collected environment (pure: tests feed it documents)."""
    out: list[Check] = []
    k = env.get("kernel", {})
    user = env.get("user", {})
    root = user.get("euid") == 0
    out.append(Check("root", OK if root else WARN, "running as root" if root else "not root",
                     "" if root else "veth namespaces, tracing and real-time priorities need root; "
                     "--topology loopback works without"))
    model = k.get("preempt_model", "unknown")
    out.append(Check("preemption", OK if model == "PREEMPT_RT" else INFO, f"kernel {k.get('release')}, {model}",
                     "" if model == "PREEMPT_RT" else "not a real-time kernel: expect longer tails than on PREEMPT_RT"))
    params = k.get("cmdline_params", {})
    tuned = [f"{p}={v}" if v else p for p, v in params.items() if p in ("isolcpus", "nohz_full", "irqaffinity")]
    out.append(Check("isolation", OK if tuned else INFO, ", ".join(tuned) or "no isolcpus/nohz_full/irqaffinity",
                     "" if tuned else "no isolated CPUs: pin with --cpu-send/--cpu-recv to reduce noise"))
    c = env.get("cpu", {})
    out.append(Check("cpu", INFO, f"{c.get('count')} x {c.get('model')}; clocksource {c.get('clocksource')}; "
                     f"governor {c.get('governor') or 'n/a'}"))
    if c.get("clocksource") not in (None, "tsc"):
        out.append(Check("clocksource", WARN, f"clocksource {c.get('clocksource')}",
                         "reading the time is slower than with tsc; timestamps cost more"))
    ifaces = env.get("net", {}).get("interfaces", [])
    hw = [i["name"] for i in ifaces if (i.get("timestamping") or {}).get("hardware")]
    sw = [i["name"] for i in ifaces if (i.get("timestamping") or {}).get("rx_software")]
    out.append(Check("timestamps", OK if hw else INFO,
                     f"hardware timestamping on {', '.join(hw)}" if hw else
                     f"software timestamps only ({', '.join(sw) or 'no interface reports capabilities'})",
                     "" if hw else "latency is measured with kernel software timestamps (no NIC timestamps)"))
    ptp = env.get("ptp", {}).get("clocks", [])
    out.append(Check("ptp", OK if ptp else INFO, ", ".join(p["name"] for p in ptp) or "no PTP hardware clock",
                     "" if ptp else "two-host one-way latency needs clocks synchronised by other means (PTP/NTP)"))
    tr = env.get("tracing", {})
    if tr.get("available"):
        missing = tr.get("event_groups_missing") or []
        out.append(Check("tracing", OK if not missing else WARN, f"tracefs at {tr.get('tracefs')}"
                         + (f"; missing event groups: {', '.join(missing)}" if missing else ""),
                         "`run --trace` can record kernel events" if not missing else
                         "breakdowns will lack the stages of the missing groups"))
        if "tai" not in tr.get("clocks", []):
            out.append(Check("trace clock", WARN, "no 'tai' trace clock",
                             "trace and probe timestamps are aligned by offset instead of exactly"))
    else:
        out.append(Check("tracing", WARN if root else INFO, "tracefs not available",
                         "`run --trace` cannot record kernel events"))
    q = env.get("qdisc", {}).get("available", {})
    for kind, meaning in (("etf", "--txtime launch times"), ("taprio", "time-aware shaping")):
        have = q.get(kind)
        out.append(Check(kind, OK if have else INFO,
                         {True: f"{kind} qdisc present", False: f"no {kind} qdisc in this kernel",
                          None: "not checked (needs root)"}[have],
                         "" if have else f"{meaning} unavailable"))
    out.append(virt_check(env.get("virt") or {}))
    out += vm_checks(env.get("kvm", {}))
    return out


def virt_check(v: dict[str, Any]) -> Check:
    """Whether this host is itself a VM (latscope.env.virt) and whether its hypervisor reports steal."""
    if not v or v.get("error"):
        return Check("host", INFO, f"not checked ({v.get('error') or 'no virtualisation facts'})")
    if not v.get("is_vm"):
        return Check("host", OK, "bare metal (no cpuid hypervisor flag, /sys/hypervisor or hypervisor DMI)")
    steal_s = (v.get("steal_ns_since_boot") or 0) / 1e9
    found = f"a virtual machine ({'; '.join(v.get('evidence') or [])})"
    if not v.get("steal_readable"):
        return Check("host", WARN, found + "; /proc/stat unreadable",
                     "the host may take CPUs away unseen: runs cannot record steal time")
    if steal_s > 0:
        return Check("host", WARN, found + f"; it reports steal: {steal_s:.1f} s since boot",
                     "the host takes CPUs away: runs record steal (`show` prints it; `breakdown` names "
                     "gaps with steal `hypervisor (steal)`)")
    return Check("host", WARN, found + "; no steal since boot (its hypervisor may not report steal)",
                 "a stall the host causes may show only as an unexplained gap in a breakdown")


def vm_checks(kv: dict[str, Any]) -> list[Check]:
    """What `run --topology vm` will find: QEMU, a guest kernel, KVM or only TCG, vhost-net."""
    out = []
    probe = kv.get("kvm_probe") or {}
    if not kv.get("opens"):
        out.append(Check("kvm", INFO, "/dev/kvm absent or not usable",
                         "VM runs use TCG: the guest CPU is emulated, latencies are not hardware figures"))
    elif probe and not probe.get("ok"):
        out.append(Check("kvm", WARN, f"/dev/kvm opens, but {probe.get('why')}",
                         "VM runs use TCG (--vm-accel auto decided so); hardware-assisted figures need a host "
                         "where KVM guests boot"))
    else:
        out.append(Check("kvm", OK, "/dev/kvm opens" + (f"; {probe.get('why')}" if probe else
                                                        " (a probe boot at the first VM run decides)")))
    parts = [f"qemu {kv.get('qemu_version')}" if kv.get("qemu") else "no qemu-system-x86_64",
             f"guest kernel {kv.get('guest_kernel')}" if kv.get("guest_kernel") else "no guest kernel",
             "busybox" if kv.get("busybox") else "no busybox",
             "vhost-net" if kv.get("vhost_net") else "no vhost-net", "tun" if kv.get("tun") else "no /dev/net/tun"]
    ready = bool(kv.get("qemu") and kv.get("guest_kernel") and kv.get("busybox") and kv.get("tun"))
    out.append(Check("vm", OK if ready else INFO, ", ".join(parts),
                     "`run --topology vm` can boot a guest" if ready else
                     "`run --topology vm` needs qemu-system-x86, linux-image-amd64 and busybox-static "
                     "(./dev setup installs them)"))
    return out


def topology_check(reasons: dict[str, str | None]) -> Check:
    """`run --topology`: which topologies this machine can build, and why not the others.

    ``reasons`` is topology -> None (can build) or the reason it cannot, as
    latscope.topo.available answers (the caller asks it: env sits below topo).
    """
    can = [k for k, why in reasons.items() if why is None]
    cannot = [f"{k}: {why}" for k, why in reasons.items() if why is not None]
    return Check("topologies", OK if not cannot else INFO, "can build: " + (", ".join(can) or "none"),
                 "cannot build: " + "; ".join(cannot) if cannot else "")


def leftovers_check(removed: tuple[str, ...], kept: tuple[str, ...]) -> Check:
    """What killed latscope processes had left behind (latscope.leftovers), removed now or kept."""
    if kept:
        return Check("leftovers", WARN, "; ".join(kept) + (f"; removed: {', '.join(removed)}" if removed else ""),
                     "left by killed latscope runs; `latscope doctor` as root removes them")
    if removed:
        return Check("leftovers", INFO, f"removed {', '.join(removed)}", "left by killed latscope runs")
    return Check("leftovers", OK, "none (no namespace, tracefs instance or staging directory of a killed run)")


def verdict(found: list[Check], topologies: dict[str, str | None] | None = None) -> dict[str, list[str]]:
    """What this host can and cannot measure, in a few plain sentences (``topologies``: topology_check's input)."""
    by = {c.name: c for c in found}
    can, cannot = [], []
    root = by["root"].status == OK
    can.append("one-way latency over loopback with kernel software timestamps")
    if root:
        can.append("one-way latency across veth between network namespaces (UDP IPv4/IPv6, raw Ethernet, VLAN)")
        can.append("SCHED_FIFO priorities, CPU pinning and mlockall for the probe")
    else:
        cannot.append("namespaces and real-time priorities (not root)")
    if by.get("tracing") and by["tracing"].status == OK:
        can.append("kernel traces during a run (`run --trace`) for latency breakdowns")
    else:
        cannot.append("kernel traces (tracefs unavailable or incomplete)")
    if by["timestamps"].status == OK:
        can.append("hardware timestamps")
    else:
        cannot.append("hardware (NIC) timestamps")
    if by.get("vm") and by["vm"].status == OK:
        kvm = by["kvm"]
        accel = "TCG: emulated CPU" if kvm.status != OK else \
            "KVM" if "booted" in kvm.found else "KVM if a probe boot succeeds, else TCG"
        can.append(f"latency into and out of a QEMU guest on a bridge or macvtap ({accel})")
    else:
        cannot.append("VM runs (QEMU, a guest kernel or busybox missing)")
    if by["etf"].status != OK:
        cannot.append("SO_TXTIME launch times (--txtime): no ETF qdisc")
    host = ("bridge", "macvlan", "vxlan", "xdp")
    paths = [k for k in host if topologies and k in topologies and topologies[k] is None]
    if paths:
        can.append(f"one-way latency across other host paths (--topology {'|'.join(paths)})")
    for kind, why in (topologies or {}).items():
        if why is not None:
            cannot.append(f"--topology {kind}: {why}")
    return {"can": can, "cannot": cannot}


def has_failures(found: list[Check]) -> bool:
    """True when a check failed outright (doctor exits 1)."""
    return any(c.status == FAIL for c in found)
