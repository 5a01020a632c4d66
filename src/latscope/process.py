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


def run_only_when_idle() -> str:
    """Put the calling thread under SCHED_IDLE: any ordinary task that wakes on its CPU preempts it at once
    (a low nice value does not do that under EEVDF, which lets the current task finish its slice).
    Falls back to nice 19. Returns the policy it got: "SCHED_IDLE", "nice 19" or "unchanged"."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return "SCHED_IDLE"
    except (OSError, AttributeError):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            return "nice 19"
        except OSError:
            return "unchanged"
