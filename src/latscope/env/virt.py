"""Is this host a virtual machine, and does its hypervisor report steal time?

Evidence, each recorded: the CPU's ``hypervisor`` flag (cpuid leaf 1, ECX
bit 31, in /proc/cpuinfo), ``/sys/hypervisor/type`` (Xen), and the DMI
system vendor and product (QEMU, VMware, VirtualBox, Microsoft Hyper-V,
Amazon EC2, Google, ...). Steal: the sum of every CPU's steal column of
/proc/stat since boot; a VM whose counters are all zero has a hypervisor
that does not report steal (or has never taken a CPU away).
"""

from __future__ import annotations

from typing import Any

from latscope.env.roots import Roots
from latscope.env.steal import parse_stat, user_hz

#: DMI vendor/product words that name a hypervisor.
DMI_WORDS = ("qemu", "kvm", "vmware", "virtualbox", "innotek", "xen", "bochs", "microsoft corporation",
             "virtual machine", "amazon ec2", "google compute engine", "openstack", "parallels", "bhyve",
             "cloud hypervisor", "firecracker")


def collect(roots: Roots) -> dict[str, Any]:
    evidence: list[str] = []
    cpuinfo = roots.read(roots.proc / "cpuinfo") or ""
    flag = any(line.startswith("flags") and " hypervisor" in line for line in cpuinfo.splitlines())
    if flag:
        evidence.append("cpuid hypervisor flag")
    xen = roots.read(roots.sys / "hypervisor" / "type")
    if xen:
        evidence.append(f"/sys/hypervisor/type {xen}")
    dmi = {k: roots.read(roots.sys / "class" / "dmi" / "id" / k) for k in ("sys_vendor", "product_name")}
    dmi_text = " ".join(v for v in dmi.values() if v)
    if any(w in dmi_text.lower() for w in DMI_WORDS):
        evidence.append(f"DMI {dmi_text}")
    stat = roots.read(roots.proc / "stat")
    steal = parse_stat(stat.encode(), user_hz()) if stat is not None else {}
    total = sum(steal.values())
    return {"is_vm": bool(evidence), "evidence": evidence, "hypervisor_type": xen, "dmi": dmi,
            "steal_readable": stat is not None, "steal_ns_since_boot": total,
            "steal_ns_per_cpu": {str(c): v for c, v in sorted(steal.items())}}
