"""Event-set changes, buffer sizing, clock choice and stats parsing of the capture (no tracefs needed)."""

from __future__ import annotations

import pytest

from latscope.errors import ConfigError, TraceError
from latscope.trace import capture, events, tracefs


def test_trace_events_changes_apply_in_order() -> None:
    """-GROUP removes a whole group, +GROUP:EVENT adds one event, -all starts from nothing."""
    base = events.resolve(None)
    assert any(e.group == "block" for e in base)
    out = events.resolve("-block,+sched:sched_stat_runtime,-sched:sched_wakeup_new")
    texts = [e.text for e in out]
    assert not [t for t in texts if t.startswith("block:")] and "sched:sched_stat_runtime" in texts
    assert "sched:sched_wakeup_new" not in texts and "sched:sched_switch" in texts
    assert [e.text for e in events.resolve("-all,irq,sched:sched_switch")] == ["irq", "sched:sched_switch"]


@pytest.mark.parametrize("bad", ["-all", "sched:sched switch", "bad/name", "-all,+"])
def test_bad_trace_events_are_usage_errors(bad: str) -> None:
    """Malformed items, or a change that leaves nothing to record, are ConfigErrors."""
    with pytest.raises(ConfigError):
        events.resolve(bad)


def test_buffers_hold_the_packets_on_probe_cpus_and_respect_memory() -> None:
    """Probe CPUs get room for every packet's events, others for background only; the total is capped."""
    sizes = capture.buffer_kb(60_000, 60_000_000_000, [0, 1, 2, 3], {1, 2}, mem_available_kb=64 << 20)
    assert sizes[1] == sizes[2] > sizes[0] == sizes[3] >= capture.MIN_BUFFER_KB
    per_packet_kb = 60_000 * events.EVENTS_PER_PACKET * events.BYTES_PER_EVENT / 1024
    assert sizes[1] - sizes[0] >= per_packet_kb
    small = capture.buffer_kb(60_000, 60_000_000_000, [0, 1], None, mem_available_kb=400_000)
    assert sum(small.values()) <= 100_000 + 2 * capture.MIN_BUFFER_KB


def test_size_override_parses_units() -> None:
    """LATSCOPE_TRACE_BUFFER takes K, M and G suffixes or plain KiB."""
    assert capture.parse_size_kb("512M") == 512 * 1024 and capture.parse_size_kb("2G") == 2 << 20
    assert capture.parse_size_kb("4096") == 4096
    with pytest.raises(ConfigError):
        capture.parse_size_kb("lots")


def test_clock_choice_prefers_tai() -> None:
    """tai maps exactly (minus the TAI offset); without it mono with a sampled offset; else an error."""
    c = capture.choose_clock("[local] global counter uptime perf mono mono_raw boot tai x86-tsc", 37_000_000_000)
    assert (c.name, c.to_realtime_ns, c.exact) == ("tai", -37_000_000_000, True)
    m = capture.choose_clock("[local] global mono", 0)
    assert m.name == "mono" and not m.exact and m.to_realtime_ns > 0
    with pytest.raises(TraceError):
        capture.choose_clock("[local] global counter", 0)


def test_cpu_stats_parse_the_kernel_format() -> None:
    """per_cpu/cpuN/stats: overrun, commit overrun and dropped events are the lost events."""
    text = ("entries: 231\noverrun: 723089\ncommit overrun: 2\nbytes: 9000\noldest event ts: 1795610310.299322\n"
            "now ts: 1795610311.000000\ndropped events: 5\nread events: 0\n")
    s = tracefs.parse_stats(1, text)
    assert (s.entries, s.overrun, s.commit_overrun, s.dropped, s.lost) == (231, 723089, 2, 5, 723096)
    assert s.oldest_event_ts == "1795610310.299322"
    assert tracefs.parse_stats(0, "garbage\n").lost == 0
