"""The sender's schedule: absolute deadlines that never drift, whatever each wakeup costs."""

from __future__ import annotations

import random
import socket

import pytest

from latscope.probe.clock import FakeClock
from latscope.probe.sender import aligned_start, run_sender
from latscope.probe.sockets import open_sender
from latscope.probe.spec import Endpoint, SenderSpec
from latscope.store.samples import MISSING


@pytest.fixture
def sink():
    """A UDP socket on loopback that swallows the sender's packets."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    yield s
    s.close()


def _spec(port: int, n: int, period: int, base: int | None = None) -> SenderSpec:
    return SenderSpec(dest=Endpoint("inet", "127.0.0.1", port), stream=1, period_ns=period, count=n,
                      base_time_ns=base, start_delay_ns=0)


def test_aligned_start_is_a_whole_period() -> None:
    """The first packet is scheduled on a multiple of the period, at least the lead time away."""
    assert aligned_start(1_000_123, 1_000, 0) == 1_001_000
    assert aligned_start(1_000_000, 1_000, 0) == 1_000_000
    assert aligned_start(1_000_000, 1_000, 5) == 1_001_000


def test_deadlines_do_not_drift_with_late_wakeups(sink: socket.socket) -> None:
    """With every wakeup up to 300 us late, packet k is still scheduled at base + k * period."""
    rng = random.Random(1)
    clock = FakeClock(start_ns=10**15, oversleep=lambda: rng.randrange(0, 300_000))
    n, period, base = 2000, 1_000_000, 10**15 + 5_000_000
    out = open_sender(Endpoint("inet", "127.0.0.1", sink.getsockname()[1]), tos=None, so_priority=None,
                      txtime=False)
    res = run_sender(_spec(sink.getsockname()[1], n, period, base), out, clock)
    assert res.done == n
    assert [res.sched[k] for k in range(n)] == [base + k * period for k in range(n)]
    wake = [res.wake[k] - res.sched[k] for k in range(n)]
    assert min(wake) >= 0 and max(wake) < 300_000
    # The clock ends one period-grid step after the last deadline, not n * average lateness later.
    assert clock.now_ns() - (base + (n - 1) * period) < 300_000
    assert clock.sleeps[:n] == [base + k * period for k in range(n)]


def test_overrun_catches_up_on_the_same_grid(sink: socket.socket) -> None:
    """A wakeup later than a whole period sends the missed packets at once, keeping their schedule."""
    lateness = iter([0, 3_500_000] + [0] * 100)
    clock = FakeClock(start_ns=10**15, oversleep=lambda: next(lateness))
    base, period = 10**15, 1_000_000
    out = open_sender(Endpoint("inet", "127.0.0.1", sink.getsockname()[1]), tos=None, so_priority=None,
                      txtime=False)
    res = run_sender(_spec(sink.getsockname()[1], 8, period, base), out, clock)
    sched = [res.sched[k] for k in range(8)]
    assert sched == [base + k * period for k in range(8)]
    send = [res.send[k] for k in range(8)]
    # Packets 2..4 were due while the sender overslept: all leave at the same (late) time.
    assert send[2] == send[3] == send[4] > sched[4]
    assert send[5] == sched[5]


def test_kernel_tx_timestamps_are_matched_to_seq(sink: socket.socket) -> None:
    """Each sent packet gets its own kernel TX timestamp, taken after its send time."""
    clock = FakeClock(start_ns=0)
    out = open_sender(Endpoint("inet", "127.0.0.1", sink.getsockname()[1]), tos=None, so_priority=None,
                      txtime=False)
    n = 200
    res = run_sender(_spec(sink.getsockname()[1], n, 1_000_000, 1_000_000), out, clock)
    assert res.info["tx_timestamps"] == n
    assert all(res.tx_sw[k] != MISSING for k in range(n))
    # FakeClock times are tiny; kernel stamps are real epoch times: just check they rise with seq.
    tx = [res.tx_sw[k] for k in range(n)]
    assert tx == sorted(tx)
