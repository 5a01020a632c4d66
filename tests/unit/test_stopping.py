"""Stop signals in a measuring process: raised at boot, recorded during the measurement, deferred in
critical sections, raised again while a trace is read (signals sent to this very process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from latscope.stopping import SIGNALS, Stopped, StopRequest, deferred, interruptible, raise_on_signals


@pytest.fixture(autouse=True)
def _restore_handlers() -> Iterator[None]:
    old = {sig: signal.getsignal(sig) for sig in SIGNALS}
    yield
    for sig, handler in old.items():
        signal.signal(sig, handler)


def _send(sig: int) -> None:
    os.kill(os.getpid(), sig)
    # The Python-level handler runs at the next bytecode boundary; give it one.
    sum(range(10))


def test_stop_request_records_the_first_signal_and_restores_handlers() -> None:
    before = signal.getsignal(signal.SIGHUP)
    with StopRequest() as stop:
        assert StopRequest.current() is stop
        _send(signal.SIGHUP)
        _send(signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGHUP and stop.name == "SIGHUP"
    assert signal.getsignal(signal.SIGHUP) is before and StopRequest.current() is None


def test_a_signal_nobody_acted_on_is_late_and_changes_nothing() -> None:
    with StopRequest() as stop:
        _send(signal.SIGTERM)
        assert stop.during_measurement is None and stop.late == signal.SIGTERM
        stop.act()  # passed on to a running worker: the measurement was cut short
        assert stop.during_measurement == signal.SIGTERM and stop.late is None


def test_raise_if_requested_is_the_checkpoint_before_the_start() -> None:
    with StopRequest() as stop:
        stop.raise_if_requested()
        _send(signal.SIGTERM)
        with pytest.raises(Stopped) as exc:
            stop.raise_if_requested()
    assert exc.value.signum == signal.SIGTERM and exc.value.before_start


def test_interruptible_raises_on_a_new_signal_only() -> None:
    """A signal that stopped the measurement does not skip what follows; one during the block cuts it short."""
    with interruptible():
        pass  # no StopRequest: nothing changes
    with StopRequest() as stop:
        _send(signal.SIGINT)
        with interruptible():
            reached = True
        assert reached
        with pytest.raises(Stopped) as exc, interruptible():
            _send(signal.SIGTERM)
            raise AssertionError("not cut short")
        assert exc.value.name == "SIGTERM" and not exc.value.before_start
        assert stop.acted  # cutting the block short changed what is stored
        _send(signal.SIGHUP)  # recorded again, no longer raising
        assert stop.signum == signal.SIGINT


def test_boot_signals_raise_stopped_before_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(StopRequest, "entered", False)
    raise_on_signals()
    with pytest.raises(Stopped) as exc:
        _send(signal.SIGTERM)
    assert exc.value.before_start and exc.value.name == "SIGTERM"


def test_deferred_delivers_after_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside: nothing happens; at the end the handler in force before runs (here: raises)."""
    monkeypatch.setattr(StopRequest, "entered", False)
    raise_on_signals()
    done = []
    with pytest.raises(Stopped), deferred():
        _send(signal.SIGINT)
        done.append("rest of the block")
    assert done == ["rest of the block"]


def test_deferred_default_action_still_ends_the_process() -> None:
    """SIGTERM with its default action, deferred: the process finishes the block, then dies of it."""
    code = ("import os, signal, sys\n"
            "from latscope.stopping import deferred\n"
            "with deferred():\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    print('inside', flush=True)\n"
            "print('after', flush=True)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == -signal.SIGTERM and r.stdout == "inside\n"
