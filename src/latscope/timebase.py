"""The kernel clocks latscope's timestamps are on, and how they relate.

The probe stamps CLOCK_REALTIME (the clock of the kernel's software
timestamps); SO_TXTIME and the ``tai`` trace clock use CLOCK_TAI. The probe,
the trace capture and the environment record all need the offset between
the two, so it lives here, below all of them.
"""

from __future__ import annotations

import time

CLOCK_REALTIME = time.CLOCK_REALTIME
CLOCK_TAI = getattr(time, "CLOCK_TAI", 11)


def tai_offset_ns() -> int:
    """CLOCK_TAI - CLOCK_REALTIME (37 s where PTP set it, often 0), rounded to whole seconds."""
    a = time.clock_gettime_ns(CLOCK_REALTIME)
    b = time.clock_gettime_ns(CLOCK_TAI)
    return round((b - a) / 1e9) * 1_000_000_000
