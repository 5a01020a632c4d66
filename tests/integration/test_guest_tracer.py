"""The guest's half of a traced VM run (latscope.remote.guesttrace), exercised on this host's own tracefs."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from latscope.remote.guesttrace import GuestTracer
from latscope.trace.fields import PHASES
from latscope.trace.parse_text import parse_kernel_text

pytestmark = pytest.mark.root


@pytest.fixture
def tracer():
    if os.geteuid() != 0:
        pytest.skip("needs root (tracefs)")
    tr = GuestTracer()
    yield tr
    tr.remove()


def test_records_markers_and_hands_back_text_and_raw(tracer) -> None:
    """start -> marker write -> stop -> read: the marker comes back parsed, with nanoseconds; missing events listed."""
    ans = tracer.start({"events": ["sched:sched_switch", "nosuch:event"], "buffer_kb": 2048})
    assert ans["events"] == ["sched:sched_switch"] and ans["events_missing"] == ["nosuch:event"]
    assert ans["clock"] in ("tai", "mono") and Path(ans["marker"]).exists()
    fd = os.open(ans["marker"], os.O_WRONLY)
    try:
        os.write(fd, b"latscope rx seq=4242")
    finally:
        os.close(fd)
    stats = tracer.stop()
    assert stats["entries"] >= 1 and stats["overruns"] == 0
    head, text = tracer.read("text", 1)
    _, raw = tracer.read("raw", 1)
    assert head["encoding"] == "zlib" and head["bytes_plain"] == len(zlib.decompress(text))
    table = parse_kernel_text(zlib.decompress(text), zlib.decompress(raw))
    rows = table.rows("print")
    assert [(int(table.nums[r, 0]), int(table.nums[r, 1])) for r in rows] == [(4242, PHASES["rx"])]
    assert table.meta.get("ts_source") == "raw"


def test_remove_leaves_no_instance(tracer) -> None:
    """The instance is gone after trace_remove, and a second remove is harmless."""
    ans = tracer.start({"events": ["sched:sched_switch"], "buffer_kb": 1024})
    path = Path(ans["tracefs"]) / "instances" / ans["instance"]
    assert path.is_dir()
    tracer.handle("trace_remove", {})
    assert not path.exists()
    tracer.handle("trace_remove", {})
