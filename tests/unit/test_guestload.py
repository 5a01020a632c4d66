"""The bounded disk writer the agent runs in a guest (latscope.remote.guestload)."""

from __future__ import annotations

import time
from pathlib import Path

from latscope.remote.guestload import FILE, write_bounded


def test_stops_at_its_byte_bound_and_removes_its_file(tmp_path: Path) -> None:
    """1 MiB in 64 KiB blocks: exactly 1 MiB written, well before the time bound, no file left."""
    t0 = time.monotonic()
    done = write_bounded(tmp_path, 1 << 20, 30.0, 1 << 16, 4)
    assert done == 1 << 20 and time.monotonic() - t0 < 30
    assert not (tmp_path / FILE).exists()


def test_stops_at_its_time_bound_when_paced(tmp_path: Path) -> None:
    """Paced at 1 MiB/s with a 0.5 s bound: it ends on time, having written about half a MiB, not the GiB asked."""
    t0 = time.monotonic()
    done = write_bounded(tmp_path, 1 << 30, 0.5, 1 << 14, 2, rate=1 << 20)
    took = time.monotonic() - t0
    assert 0.4 < took < 5.0
    assert 0 < done <= (1 << 20) // 2 + (1 << 16)
