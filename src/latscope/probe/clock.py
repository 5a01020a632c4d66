"""Clocks and sleeping at absolute deadlines.

The sender computes every deadline as base + seq * period and sleeps until
that absolute time (clock_nanosleep with TIMER_ABSTIME). A relative sleep
would add each wakeup's lateness to all later packets and the stream would
drift; absolute deadlines keep the schedule whatever a single wakeup costs.
Timing code takes a clock object so tests can substitute a fake one.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from typing import Protocol

from latscope.libc import LIBC
from latscope.timebase import CLOCK_REALTIME, CLOCK_TAI, tai_offset_ns

__all__ = ["CLOCK_REALTIME", "CLOCK_TAI", "Clock", "FakeClock", "RealClock", "tai_offset_ns"]

TIMER_ABSTIME = 1


class Clock(Protocol):
    """What timing code needs from a clock."""

    def now_ns(self) -> int:
        """The current time in nanoseconds."""

    def sleep_until(self, deadline_ns: int) -> None:
        """Return at or after ``deadline_ns`` (absolute)."""


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_clock_nanosleep = LIBC.clock_nanosleep
_clock_nanosleep.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Timespec), ctypes.c_void_p]
_clock_nanosleep.restype = ctypes.c_int


class RealClock:
    """CLOCK_REALTIME, the clock the kernel's software timestamps use.

    ``spin_ns`` > 0 sleeps until that long before the deadline and busy-waits
    the rest, trading a CPU for lower, steadier wakeup latency.
    """

    def __init__(self, clock_id: int = CLOCK_REALTIME, spin_ns: int = 0) -> None:
        self.clock_id = clock_id
        self.spin_ns = spin_ns
        self._ts = _Timespec()
        self._ref = ctypes.byref(self._ts)
        self._gettime = time.clock_gettime_ns

    def now_ns(self) -> int:
        return self._gettime(self.clock_id)

    def sleep_until(self, deadline_ns: int) -> None:
        target = deadline_ns - self.spin_ns
        ts = self._ts
        ts.tv_sec, ts.tv_nsec = divmod(target, 1_000_000_000)
        # clock_nanosleep returns the error number (not -1/errno). EINTR means a
        # signal arrived: Python runs its handler after we return, and a
        # handler that ends the run raises there; otherwise we sleep again.
        while (rc := _clock_nanosleep(self.clock_id, TIMER_ABSTIME, self._ref, None)) == errno.EINTR:
            pass
        if rc:
            raise OSError(rc, os.strerror(rc))
        if self.spin_ns:
            get, cid = self._gettime, self.clock_id
            while get(cid) < deadline_ns:
                pass


class FakeClock:
    """A clock for tests: time moves only when code sleeps, plus an optional oversleep per call."""

    def __init__(self, start_ns: int = 1_000_000_000_000, oversleep=None) -> None:
        self.t = start_ns
        self.oversleep = oversleep or (lambda: 0)
        self.sleeps: list[int] = []

    def now_ns(self) -> int:
        return self.t

    def sleep_until(self, deadline_ns: int) -> None:
        self.sleeps.append(deadline_ns)
        self.t = max(self.t, deadline_ns)
        self.t += int(self.oversleep())

    def advance(self, ns: int) -> None:
        """Let time pass as if work took ``ns``."""
        self.t += ns

