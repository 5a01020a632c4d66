"""Real-time knobs of a worker process: priority, affinity, memory locking, GC.

Each knob reports what it found and what it set, so the run records the
scheduling that was actually in force rather than what was asked for.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from latscope import libc
from latscope.errors import ConfigError, PrivilegeError

MCL_CURRENT = 1
MCL_FUTURE = 2


_POLICY_NAMES = {
    os.SCHED_OTHER: "SCHED_OTHER",
    os.SCHED_FIFO: "SCHED_FIFO",
    os.SCHED_RR: "SCHED_RR",
    getattr(os, "SCHED_BATCH", 3): "SCHED_BATCH",
    getattr(os, "SCHED_IDLE", 5): "SCHED_IDLE",
}


def set_affinity(cpu: int | None) -> None:
    """Pin the calling process to ``cpu`` (None: leave as is)."""
    if cpu is None:
        return
    available = os.sched_getaffinity(0)
    if cpu not in available:
        raise ConfigError(f"CPU {cpu} is not available (allowed: {sorted(available)})")
    os.sched_setaffinity(0, {cpu})


def set_fifo(prio: int | None) -> None:
    """Run the calling process as SCHED_FIFO at ``prio`` (None: leave as is)."""
    if prio is None:
        return
    lo, hi = os.sched_get_priority_min(os.SCHED_FIFO), os.sched_get_priority_max(os.SCHED_FIFO)
    if not lo <= prio <= hi:
        raise ConfigError(f"priority {prio} out of range {lo}..{hi}")
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))
    except PermissionError:
        raise PrivilegeError(f"SCHED_FIFO priority {prio} needs root or CAP_SYS_NICE; run without --prio") from None


def lock_memory() -> bool:
    """mlockall(MCL_CURRENT|MCL_FUTURE) so no page fault lands in the hot path; False when refused."""
    return libc.LIBC.mlockall(MCL_CURRENT | MCL_FUTURE) == 0


def unlock_memory() -> None:
    """Undo lock_memory (before writing results, which may allocate a lot)."""
    libc.LIBC.munlockall()


PR_SET_PDEATHSIG = 1
PR_SET_TIMERSLACK = 29
PR_GET_TIMERSLACK = 30


def minimal_timer_slack() -> None:
    """Set this thread's timer slack to 1 ns.

    Normal (SCHED_OTHER) tasks get 50 us of slack by default: the kernel may
    fire their timers that much late to batch wakeups, which would show up as
    wakeup latency that has nothing to do with the system under test.
    """
    libc.LIBC.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)


def parent_death_signal(sig: int) -> bool:
    """Have the kernel send ``sig`` to this process when its parent (the thread that forked it) ends."""
    return libc.LIBC.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0


def scheduling_in_force() -> dict[str, Any]:
    """Policy, priority and affinity of the calling process, as the kernel reports them."""
    policy = os.sched_getscheduler(0)
    return {
        "policy": _POLICY_NAMES.get(policy, str(policy)),
        "priority": os.sched_getparam(0).sched_priority,
        "affinity": sorted(os.sched_getaffinity(0)),
        "timer_slack_ns": libc.LIBC.prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0),
        "pid": os.getpid(),
    }


@contextmanager
def cpu_dma_latency(limit_us: int | None, path: str = "/dev/cpu_dma_latency") -> Iterator[dict[str, Any]]:
    """Hold a PM QoS limit on CPU wakeup latency (deep C-states off) while the block runs.

    The kernel keeps the limit as long as the file stays open, and drops it
    when it is closed: also when the process dies. cyclictest does the same
    with 0 by default; latscope only when asked, because a system's idle
    states are part of the latency its users live with.
    """
    if limit_us is None:
        yield {"requested": None}
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except PermissionError:
        raise PrivilegeError("--cpu-dma-latency needs root (it writes /dev/cpu_dma_latency)") from None
    except FileNotFoundError:
        raise ConfigError(f"--cpu-dma-latency: {path} does not exist on this kernel") from None
    try:
        os.write(fd, int(limit_us).to_bytes(4, "little", signed=True))
        yield {"requested": limit_us, "held": True}
    finally:
        os.close(fd)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Collect once, then keep the cyclic garbage collector off for the duration."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()
