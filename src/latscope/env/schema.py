"""The environment document's keys, declared: which describe the setup (compared between runs) and which
describe the moment (volatile: capture times, pids, random MAC addresses).

Keys are dotted paths of the flattened document (latscope.analysis.envdiff.flatten): nested objects join
with dots, a list of objects that have a ``name`` is keyed by it (``net.interfaces[eth0].mtu``), any other
list is one value. In a pattern ``*`` stands for one key component, ``**`` for the rest of the key (which
may hold dots: ``processor.max_cstate``) and ``[*]`` for any item name.
docs/format.md ("Environment keys") lists the same; tests/unit/env/test_schema.py checks that what
collect_environment() writes on the test machine is all declared here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

COMPARED = "compared"
VOLATILE = "volatile"

#: The collected environment (collect_environment(): run.json ``environment.before``, and a VM run's
#: ``environment.guest``, the guest's own). A collector that failed leaves ``{"error": ...}`` instead.
COLLECTED: dict[str, str] = {
    "*.error": COMPARED,
    "kernel.release": COMPARED,
    "kernel.version": COMPARED,
    "kernel.machine": COMPARED,
    "kernel.hostname": COMPARED,
    "kernel.preempt_model": COMPARED,
    "kernel.cmdline": COMPARED,
    "kernel.cmdline_params.**": COMPARED,
    "cpu.model": COMPARED,
    "cpu.count": COMPARED,
    "cpu.online": COMPARED,
    "cpu.isolated": COMPARED,
    "cpu.nohz_full": COMPARED,
    "cpu.clocksource": COMPARED,
    "cpu.clocksources_available": COMPARED,
    "cpu.governor": COMPARED,
    "cpu.governor.*": COMPARED,
    "net.interfaces": COMPARED,  # an empty list
    "net.interfaces[*].kind": COMPARED,
    "net.interfaces[*].driver": COMPARED,
    "net.interfaces[*].state": COMPARED,
    "net.interfaces[*].mtu": COMPARED,
    "net.interfaces[*].address": VOLATILE,  # veth and tap MACs are random
    "net.interfaces[*].qdisc": COMPARED,
    "net.interfaces[*].num_tx_queues": COMPARED,
    "net.interfaces[*].timestamping": COMPARED,  # null: the device answers no ethtool query
    "net.interfaces[*].timestamping.*": COMPARED,
    "ptp.clocks": COMPARED,  # an empty list
    "ptp.clocks[*].clock_name": COMPARED,
    "tracing.tracefs": COMPARED,
    "tracing.available": COMPARED,
    "tracing.clocks": COMPARED,
    "tracing.instances": COMPARED,
    "tracing.event_groups_missing": COMPARED,
    "tracing.tracers": COMPARED,
    "kvm.device": COMPARED,
    "kvm.opens": COMPARED,
    "kvm.qemu": COMPARED,
    "kvm.qemu_version": COMPARED,
    "kvm.guest_kernel": COMPARED,
    "kvm.busybox": COMPARED,
    "kvm.vhost_net": COMPARED,
    "kvm.tun": COMPARED,
    "kvm.kvm_probe": COMPARED,  # null: never probed
    "kvm.kvm_probe.key": COMPARED,
    "kvm.kvm_probe.ok": COMPARED,
    "kvm.kvm_probe.why": COMPARED,
    "latscope.version": COMPARED,
    "latscope.git_commit": VOLATILE,  # every commit of a working tree would be a difference
    "latscope.python": COMPARED,
    "time.captured_at": VOLATILE,
    "time.tai_offset_s": COMPARED,
    "user.euid": COMPARED,
    "qdisc.available.*": COMPARED,
    "virt.is_vm": COMPARED,
    "virt.evidence": COMPARED,
    "virt.hypervisor_type": COMPARED,
    "virt.dmi.*": COMPARED,
    "virt.steal_readable": COMPARED,
    "virt.steal_ns_since_boot": VOLATILE,  # grows all the time
    "virt.steal_ns_per_cpu.*": VOLATILE,  # grows all the time
}

#: run.json ``environment``: the collected environment before the run (and the guest's), plus what the run
#: itself records.
RUN: dict[str, str] = {
    **{f"before.{key}": rule for key, rule in COLLECTED.items()},
    **{f"guest.{key}": rule for key, rule in COLLECTED.items()},
    "after.captured_at": VOLATILE,
    "topology.kind": COMPARED,
    "topology.dest": COMPARED,
    "topology.accel": COMPARED,
    "topology.namespaces": VOLATILE,  # names carry the pid
    "topology.interfaces": VOLATILE,  # names carry the pid
    "topology.addresses": COMPARED,
    "topology.devices.*.ifname": VOLATILE,  # names carry the pid
    "topology.devices.*.namespace": VOLATILE,  # names carry the pid
    "topology.devices.*.peer": VOLATILE,  # a device name
    "topology.devices.*.master": VOLATILE,  # a device name
    "topology.devices.*.mac": VOLATILE,  # random per run
    "topology.devices.*.settings.underlay": VOLATILE,  # a device name
    "topology.devices.*.settings.xdp.prog_id": VOLATILE,  # the kernel's id of the loaded program
    "topology.devices.*.settings.xdp.redirect_to": VOLATILE,  # a device name
    "topology.devices.*.kind": COMPARED,
    "topology.devices.*.mtu": COMPARED,
    "topology.devices.*.addresses": COMPARED,
    "topology.devices.*.settings.**": COMPARED,  # bridge, macvlan, vxlan and XDP settings as the kernel reports them
    "workers.*": COMPARED,  # null: the half reported no scheduling
    "workers.*.policy": COMPARED,
    "workers.*.priority": COMPARED,
    "workers.*.affinity": COMPARED,
    "workers.*.timer_slack_ns": COMPARED,
    "workers.*.mlock": COMPARED,
    "workers.*.pid": VOLATILE,
}


def _regex(pattern: str) -> str:
    out = []
    for part in re.split(r"(\[\*\]|\*\*|\*)", pattern):
        if part == "**":
            out.append(r".+")
        elif part == "[*]":
            out.append(r"\[[^\]]*\]")
        elif part == "*":
            out.append(r"[^.\[]+")
        else:
            out.append(re.escape(part))
    return "".join(out)


@lru_cache(maxsize=8)
def _compiled(items: tuple[tuple[str, str], ...]) -> list[tuple[re.Pattern[str], str]]:
    return [(re.compile(_regex(pattern)), rule) for pattern, rule in items]


def rule_of(key: str, schema: Mapping[str, str] = RUN) -> str | None:
    """COMPARED or VOLATILE for a flattened key of ``schema``'s document; None when the key is not declared."""
    for regex, rule in _compiled(tuple(schema.items())):
        if regex.fullmatch(key):
            return rule
    return None


def undeclared(keys: list[str] | set[str], schema: Mapping[str, str] = COLLECTED) -> list[str]:
    """The keys ``schema`` does not declare, sorted."""
    return sorted(k for k in keys if rule_of(k, schema) is None)
