"""Facts about processes that latscope needs in more than one place."""

from __future__ import annotations

import os
import threading


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists (also when it belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lower_priority(idle: bool = True) -> str:
    """Lower the calling thread's priority below the probes'.

    ``idle``: SCHED_IDLE, so that any ordinary task that wakes on its CPU preempts it at once (nice 19
    does not guarantee that under EEVDF), at the price of getting almost no CPU while others want it;
    falls back to nice 19. Without ``idle``: nice 19, which still gets a share of a busy CPU.
    Returns the policy it got: "SCHED_IDLE", "nice 19" or "unchanged".
    """
    if idle:
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return "SCHED_IDLE"
        except (OSError, AttributeError):
            pass
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        return "nice 19"
    except OSError:
        return "unchanged"
