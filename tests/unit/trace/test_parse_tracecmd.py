"""trace-cmd report output (default, -R, -t) of the same buffer as the kernel-text fixture."""

from __future__ import annotations

import numpy as np
import pytest

from latscope.trace.breakdown import detect_format
from latscope.trace.fields import STATE_OTHER
from latscope.trace.parse_text import parse_kernel_text
from latscope.trace.parse_tracecmd import is_raw, parse_tracecmd_report
from tests.unit.trace.conftest import fixture_bytes


@pytest.fixture(scope="module")
def kernel(text_bytes: bytes, raw_bytes: bytes):
    return parse_kernel_text(text_bytes, raw_bytes)


@pytest.mark.parametrize("form", ["report", "report-R", "report-t"])
def test_same_events_as_the_kernel_text(kernel, form: str) -> None:
    """Every form lists the same events (name, pid, CPU, time) as the kernel's own rendering."""
    t = parse_tracecmd_report(fixture_bytes(f"veth-run.{form}"))
    assert t.meta["parse"]["unparsed"] == 0 and t.meta["parse"]["garbled_fields"] == 0
    assert len(t) == len(kernel)
    assert [t.event_names[e] for e in t.event] == [kernel.event_names[e] for e in kernel.event]
    assert t.pid.tolist() == kernel.pid.tolist() and t.cpu.tolist() == kernel.cpu.tolist()
    if form == "report-t":
        assert t.meta["ts_resolution_ns"] == 1 and np.array_equal(t.ts, kernel.ts)  # -t: exact nanoseconds
    else:
        assert np.abs(t.ts - kernel.ts).max() <= 500


@pytest.mark.parametrize("form", ["report", "report-R"])
def test_fields_agree_with_the_kernel_text(kernel, form: str) -> None:
    """Switches, wakeups, markers and syscall returns read the same numbers from either format."""
    t = parse_tracecmd_report(fixture_bytes(f"veth-run.{form}"))
    for name, cols in (("sched_switch", [0, 1, 2, 3]), ("sched_waking", [0, 1, 2]), ("sched_wakeup", [0, 1, 2]),
                       ("print", [0, 1]), ("sys_exit_recvmsg", [0]), ("sys_exit_sendmsg", [0]),
                       ("softirq_entry", [0])):
        a, b = t.rows(name), kernel.rows(name)
        assert len(a) == len(b) > 0, name
        assert np.array_equal(t.nums[a][:, cols], kernel.nums[b][:, cols]), name
    sw_t, sw_k = t.rows("sched_switch"), kernel.rows("sched_switch")
    assert [t.string(x) for x in t.strs[sw_t, 1]] == [kernel.string(x) for x in kernel.strs[sw_k, 1]]
    # the two spell task states differently; runnable (R, R+) and not runnable must agree
    runnable_t = (t.nums[sw_t, 4] & 0xFFFF) == 0
    runnable_k = (kernel.nums[sw_k, 4] & 0xFFFF) == 0
    assert runnable_t.tolist() == runnable_k.tolist()


def test_network_addresses_are_consistent_within_a_file() -> None:
    """trace-cmd prints real skb addresses (the kernel hashed ones): the chain still links within the file."""
    t = parse_tracecmd_report(fixture_bytes("veth-run.report"))
    q, x = t.rows("net_dev_queue"), t.rows("net_dev_start_xmit")
    assert len(q) == len(x) > 0 and np.array_equal(t.nums[q, 0], t.nums[x, 0])


def test_dialect_detection() -> None:
    """-R output is told apart from the default form, and either from the kernel's text."""
    assert is_raw(fixture_bytes("veth-run.report-R")) and not is_raw(fixture_bytes("veth-run.report"))
    assert detect_format(fixture_bytes("veth-run.report")[:65536]) == "trace-cmd"
    assert detect_format(fixture_bytes("veth-run.txt")[:65536]) == "ftrace-text"
    assert detect_format(fixture_bytes("empty.txt")) == "empty"
    assert detect_format(b"\x17\x08\x44tracing6\0\0\0") == "unknown"


def test_latency_format_lines_are_reported_as_unsupported() -> None:
    """`trace-cmd report -l` lines are counted as unparsed with a hint to drop -l."""
    lines = fixture_bytes("veth-run.report").decode().splitlines()
    latency = [lines[0]] + [ln.replace("[000]", "0d..2.").replace("[001]", "1d..2.") for ln in lines[1:40]]
    t = parse_tracecmd_report("\n".join(latency).encode())
    assert t.meta["parse"]["unparsed"] > 0
    assert any("-l" in w for w in t.meta.get("warnings", []))


def test_unknown_state_letters_mean_not_runnable() -> None:
    """A state letter from another kernel's table still reads as 'not runnable'."""
    from latscope.trace.fields import state_code

    assert state_code("R") == 0 and state_code("R+") & 0xFFFF == 0
    assert state_code("W") and state_code("Q") == STATE_OTHER and state_code("S|K")
