"""The kernel's text format: real captured lines, their raw nanoseconds, and broken input."""

from __future__ import annotations

import re

import numpy as np
import pytest

from latscope.trace.fields import PHASES, STATE_PREEMPTED
from latscope.trace.parse_text import parse_kernel_text, raw_timestamps
from latscope.trace.table import NONE
from tests.unit.trace.conftest import fixture_bytes

LINE = re.compile(r"^\s*(.*?)-(\d+)\s+\[(\d+)\]\s+(\S+)\s+(\d+)\.(\d+): (\w+)(: |\(| -> )(.*)$")


def reference(text: str) -> list[tuple]:
    """A slow, obvious parse of each event line: (comm, pid, cpu, ts_us, name, sep, args)."""
    out = []
    for ln in text.splitlines():
        if not ln or ln.startswith("#"):
            continue
        m = LINE.match(ln)
        assert m, ln
        comm, pid, cpu, _flags, sec, frac, name, sep, args = m.groups()
        out.append((comm, int(pid), int(cpu), int(sec) * 1_000_000 + int(frac), name, sep, args))
    return out


def test_every_line_of_a_real_trace_is_read_like_the_reference(text_bytes: bytes) -> None:
    """Task, pid, CPU and time of every real line equal a line-by-line regular-expression parse."""
    t = parse_kernel_text(text_bytes)
    ref = reference(text_bytes.decode())
    assert len(t) == len(ref) and t.meta["parse"]["unparsed"] == 0 and t.meta["parse"]["garbled_fields"] == 0
    # the kernel prints in time order and the table keeps ties in print order, so rows match lines
    assert [t.string(c) for c in t.comm] == [r[0] for r in ref]
    assert t.pid.tolist() == [r[1] for r in ref] and t.cpu.tolist() == [r[2] for r in ref]
    assert (t.ts // 1000).tolist() == [r[3] for r in ref]
    assert t.meta["ts_resolution_ns"] == 1000


def test_fields_match_the_printed_arguments(text_bytes: bytes) -> None:
    """Switch, wakeup, network, syscall-return and marker fields equal what the lines say."""
    t = parse_kernel_text(text_bytes)
    for i, (_c, _p, _cpu, _ts, name, sep, args) in enumerate(reference(text_bytes.decode())):
        ev = t.event_names[t.event[i]]
        nums, strs = t.nums[i], [t.string(x) for x in t.strs[i]]
        if ev == "sched_switch":
            m = re.match(r"prev_comm=(.*) prev_pid=(\d+) prev_prio=(\d+) prev_state=(\S+) ==> "
                         r"next_comm=(.*) next_pid=(\d+) next_prio=(\d+)", args)
            assert (nums[0], nums[1], nums[2], nums[3]) == (int(m[2]), int(m[6]), int(m[3]), int(m[7]))
            assert strs == [m[1], m[5]]
            assert (nums[4] == 0) == (m[4] == "R") and (nums[4] == STATE_PREEMPTED) == (m[4] == "R+")
        elif ev in ("sched_waking", "sched_wakeup"):
            m = re.match(r"comm=(.*) pid=(\d+) prio=(\d+) target_cpu=(\d+)", args)
            assert nums[:3].tolist() == [int(m[2]), int(m[3]), int(m[4])] and strs[0] == m[1]
        elif ev in ("net_dev_queue", "net_dev_start_xmit", "netif_rx", "net_dev_xmit", "netif_receive_skb"):
            m = re.search(r"dev=(\S+) .*?skbaddr=([0-9a-f]+)", args)
            assert nums[0] == np.array([int(m[2], 16)], dtype=np.uint64).view(np.int64)[0] and strs[0] == m[1]
        elif ev.startswith("sys_exit_"):
            assert sep == " -> " and nums[0] == np.array([int(args, 16)], np.uint64).view(np.int64)[0]
        elif ev.startswith("sys_enter_"):
            assert sep == "(" and name == "sys_" + ev[len("sys_enter_"):]
        elif ev == "print" and args.startswith("latscope"):
            m = re.match(r"latscope (tx|rx) seq=(\d+)", args)
            assert nums[0] == int(m[2]) and nums[1] == PHASES[m[1]]
        elif ev == "hrtimer_expire_entry":
            assert strs[0] == re.search(r"function=(\S+)", args)[1]


def test_raw_rendering_gives_nanoseconds(text_bytes: bytes, raw_bytes: bytes) -> None:
    """With the raw rendering the timestamps become the kernel's nanoseconds (the text rounds them to us)."""
    us = parse_kernel_text(text_bytes)
    ns = parse_kernel_text(text_bytes, raw_bytes)
    assert ns.meta["ts_source"] == "raw" and ns.meta["ts_resolution_ns"] == 1
    assert np.abs(ns.ts - us.ts).max() <= 500 and np.any(ns.ts % 1000)
    _pid, _cpu, stamps = raw_timestamps(raw_bytes)
    assert len(stamps) == len(ns) and (stamps > 0).all()


def test_raw_rendering_of_other_data_is_refused(text_bytes: bytes, raw_bytes: bytes) -> None:
    """A raw rendering that does not match line by line is ignored with a warning, not merged."""
    lines = raw_bytes.splitlines(keepends=True)
    t = parse_kernel_text(text_bytes, b"".join(lines[1:]))
    assert t.meta["ts_source"] == "text" and t.meta["warnings"]
    assert t.meta["ts_resolution_ns"] == 1000


def test_empty_trace_has_no_events() -> None:
    """The header of an empty instance parses to an empty table."""
    t = parse_kernel_text(fixture_bytes("empty.txt"))
    assert len(t) == 0 and t.meta["parse"]["comments"] == 12


def test_overrun_trace_reports_what_the_kernel_lost() -> None:
    """A buffer that overflowed: the header's written-versus-kept count and the late-started CPU are kept."""
    t = parse_kernel_text(fixture_bytes("overrun.txt"))
    p = t.meta["parse"]
    assert p["overwritten"] > 0 and p["entries_in_buffer"] == len(t)
    assert p["buffer_started"]


def test_truncated_and_garbled_lines_are_counted_not_fatal(text_bytes: bytes) -> None:
    """A cut last line, garbage bytes and a mangled field: warnings with counts, the rest still read."""
    lines = text_bytes.decode().splitlines()
    events = [ln for ln in lines if not ln.startswith("#")]
    bad = lines[:200] + ["\x00\x01 not a trace line at all", "      python-1 [000] ..... 12.5: ",
                         events[10].replace("prev_pid=", "prev_pod=") if "sched_switch" in events[10]
                         else events[10]] + lines[200:] + [events[-1][:40]]
    t = parse_kernel_text("\n".join(bad).encode("utf-8", "surrogateescape"))
    p = t.meta["parse"]
    assert p["unparsed"] >= 2 and p["unparsed_examples"][0]["line"] > 0
    assert len(t) >= len(events) - 1


def test_unknown_events_keep_their_names(text_bytes: bytes) -> None:
    """Events latscope has no field spec for are kept by name (a function-tracer line too)."""
    extra = (b"          python-2400    [000] ...1. 1795610325.309030: my_new_event: a=1 b=2\n"
             b"          python-2400    [000] ...1. 1795610325.309031: do_sys_open <-do_syscall_64\n")
    t = parse_kernel_text(text_bytes + extra)
    assert t.code("my_new_event") >= 0 and t.code("do_sys_open") >= 0


@pytest.mark.parametrize("transform", ["four_flags", "no_flags", "tgid", "crlf", "short_uptime"])
def test_other_kernels_layouts(text_bytes: bytes, transform: str) -> None:
    """Layouts of other kernels and options (4 flag columns, no irq-info, record-tgid, CRLF) read the same."""
    base = parse_kernel_text(text_bytes)
    lines = []
    for ln in text_bytes.decode().splitlines():
        if ln.startswith("#"):
            continue
        m = re.match(r"^(.{16}-\d+\s+)\[(\d+)\] (\S+) (\d+)\.(\d+)(: .*)$", ln)
        head, cpu, flags, sec, frac, rest = m.groups()
        if transform == "four_flags":
            ln = f"{head}[{cpu}] {flags[:4]} {sec}.{frac}{rest}"
        elif transform == "no_flags":
            ln = f"{head}[{cpu}] {sec}.{frac}{rest}"
        elif transform == "tgid":
            ln = f"{head}(   2400) [{cpu}] {flags} {sec}.{frac}{rest}"
        elif transform == "short_uptime":
            ln = f"{head}[{cpu}] {flags} {int(sec) % 100000:5d}.{frac}{rest}"
        lines.append(ln)
    sep = "\r\n" if transform == "crlf" else "\n"
    t = parse_kernel_text(sep.join(lines).encode())
    assert len(t) == len(base) and t.meta["parse"]["unparsed"] == 0
    assert t.pid.tolist() == base.pid.tolist() and t.event.tolist() == base.event.tolist()
    assert np.array_equal(t.nums, base.nums)
    if transform == "no_flags":
        assert not t.ctx.any()
    elif transform != "short_uptime":
        assert np.array_equal(t.ts, base.ts)


def test_missing_numbers_are_none_not_zero(text_bytes: bytes) -> None:
    """Fields an event does not have stay NONE (int64 min), never a made-up 0."""
    t = parse_kernel_text(text_bytes)
    timer = t.rows("local_timer_entry")
    assert len(timer) and (t.nums[timer] == NONE).all() and (t.strs[timer] == -1).all()
