"""Which host threads belong to the run's QEMU, and what each does, in the seed's words.

Names alone are not enough: another QEMU on the same host has threads called
``CPU 0/TCG`` and ``worker`` too. The thread ids come from run.json (the map
taken when the guest came up and after the run, ``vm.threads``, and the
samples the guest trace capture took when recording started and stopped,
``guest_trace.qemu_threads``); threads this QEMU created during the run
(its thread pool's ``worker`` threads come and go) are added from the host
trace: a ``sched_wakeup_new`` fires in the thread that created the new one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from latscope.topo.vm.qemu import thread_role
from latscope.trace.table import EventTable

_CPU = re.compile(r"^CPU (\d+)/")


@dataclass(frozen=True)
class QemuThreads:
    """tid -> (name, role) of one QEMU process (roles: main, vcpu, iothread, worker, other)."""

    by_tid: dict[int, tuple[str, str]]
    pid: int | None = None

    def __contains__(self, tid: object) -> bool:
        return tid in self.by_tid

    def role(self, tid: int) -> str | None:
        entry = self.by_tid.get(int(tid))
        return entry[1] if entry else None

    def tids(self, role: str) -> list[int]:
        return sorted(t for t, (_n, r) in self.by_tid.items() if r == role)

    def label(self, tid: int) -> str:
        """How a report names the thread: "QEMU IO thread IO io0", "vCPU thread CPU 0/TCG", ..."""
        name, role = self.by_tid.get(int(tid), ("?", "other"))
        return {"main": "QEMU main loop", "vcpu": f"vCPU thread {name}", "iothread": f"QEMU IO thread {name}",
                "worker": "QEMU worker thread"}.get(role, f"QEMU thread {name}")

    def vcpu_of_guest_cpu(self) -> dict[int, list[int]]:
        """Guest CPU n -> the vCPU thread(s) named ``CPU n/...``."""
        out: dict[int, list[int]] = {}
        for tid, (name, role) in self.by_tid.items():
            m = _CPU.match(name)
            if role == "vcpu" and m:
                out.setdefault(int(m.group(1)), []).append(tid)
        return out


def from_run(vm: dict[str, Any], guest_trace: dict[str, Any] | None, host: EventTable | None) -> QemuThreads:
    """The thread map of the run's QEMU, completed from the host trace."""
    by_tid: dict[int, tuple[str, str]] = {}
    for doc in list(vm.get("threads") or []) + list((guest_trace or {}).get("qemu_threads") or []):
        try:
            tid, name = int(doc["tid"]), str(doc["name"])
        except (KeyError, TypeError, ValueError):
            continue
        by_tid[tid] = (name, thread_role(name))
    pid = (vm.get("qemu") or {}).get("pid")
    if isinstance(pid, int) and pid not in by_tid:
        by_tid[pid] = ("qemu-system-x86", "main")
    if host is not None and len(host):
        rows = host.rows("sched_wakeup_new")
        # in time order, so a worker made by a worker is found too
        for r in rows:
            parent, child = int(host.pid[r]), int(host.nums[r, 0])
            if parent in by_tid and child not in by_tid and child > 0:
                # A new thread still has its creator's name; QEMU names it once it runs.
                name = _later_name(host, child, int(r)) or host.string(int(host.strs[r, 0]))
                by_tid[child] = (name, thread_role(name))
    if isinstance(pid, int):
        # only the process's first thread is the main loop; others still carry the process name
        by_tid = {t: (n, "other" if r == "main" and t != pid else r) for t, (n, r) in by_tid.items()}
    return QemuThreads(by_tid, pid if isinstance(pid, int) else None)


def _later_name(table: EventTable, tid: int, after: int) -> str:
    """The name ``tid`` ran under last in the table (after row ``after``)."""
    rows = np.flatnonzero(table.pid[after:] == tid)
    return table.string(int(table.comm[after + rows[-1]])) if len(rows) else ""


def comm_tids(table: EventTable, comm: str) -> np.ndarray:
    """Thread ids that appear under ``comm`` in a table (for checks and tests)."""
    sid = table.string_id(comm)
    if sid < 0:
        return np.zeros(0, np.int64)
    return np.unique(table.pid[table.comm == sid]).astype(np.int64)
