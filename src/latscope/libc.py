"""The C library for every module that calls it through ctypes, and the one struct it shares (timex).

Standard library only: the guest agent (latscope.remote.agent) imports it before anything else.

``ctypes.CDLL(None)`` opens the running program, which links the C library,
so no lookup is needed. ``ctypes.util.find_library("c")`` runs
``ldconfig -p`` in a child process on every call (about 25 ms each): a run
used to make a dozen of them.
"""

from __future__ import annotations

import ctypes

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
PR_SET_NAME = 15


def set_thread_name(name: str) -> None:
    """Name the calling thread as the kernel shows it (its comm: ps -L, sched_switch in traces, a
    breakdown's culprits); 15 bytes at most. Python's own thread names stay inside Python."""
    LIBC.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


class Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class Timex(ctypes.Structure):
    """struct timex (x86_64 and other LP64 ABIs); ctypes adds the same padding the C compiler does.

    With ADJ_NANO, ``time.tv_usec`` holds nanoseconds.
    """

    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
        ("time", Timeval), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]
