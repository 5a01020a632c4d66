"""What SIGINT, SIGTERM and SIGHUP do to a measuring process (`run`, `send`, `recv`), phase by phase.

A stop signal either *raises* (``Stopped``, at once, wherever the main thread
is) or is *recorded* (a ``StopRequest`` flag the controller polls). Raising
suits phases that have nothing worth keeping yet and create nothing that a
``finally`` cannot undo (boot) or that are worth cutting short (reading a
trace); recording suits the measurement, whose packets are kept and stored.
Critical sections that create or remove something by name (a namespace)
*defer* the signals: they are delivered, to whichever handler was in force,
when the section is over, so no exception lands between "created" and
"will be removed". docs/run.md lists the outcome of a signal in every phase.

This module is imported by the CLI's entry point before any verb: it must
stay free of heavy imports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any, ClassVar, Self

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def signal_name(signum: int) -> str:
    """SIGTERM for 15; "signal N" for numbers without a name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Stopped(BaseException):
    """A stop signal ended the work at once.

    A BaseException, like KeyboardInterrupt, so that handlers of ordinary
    errors (``except Exception``, ``except LatscopeError``) do not swallow it;
    unlike KeyboardInterrupt, click does not turn it into a bare "Aborted".
    """

    def __init__(self, signum: int, *, before_start: bool = False) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum
        #: True when it ended the process before the measurement started: nothing was stored.
        self.before_start = before_start

    @property
    def name(self) -> str:
        return signal_name(self.signum)


def _in_main_thread() -> bool:
    # signal.signal works only there; elsewhere (a test driving the CLI from a thread) nothing is changed.
    return threading.current_thread() is threading.main_thread()


def _raise(signum: int, _frame: Any) -> None:
    raise Stopped(signum, before_start=not StopRequest.entered)


def raise_on_signals() -> None:
    """From now on a stop signal raises ``Stopped`` (until a StopRequest takes over, and again after it).

    Installed as early as the CLI knows it starts a measuring verb: without it a
    SIGTERM at boot ends the process silently, mid-way through whatever it was
    creating.
    """
    if not _in_main_thread():
        return
    for sig in SIGNALS:
        signal.signal(sig, _raise)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold stop signals for the block; deliver them afterwards to the handlers in force before it.

    For a few milliseconds of create-or-remove-by-name (the environment probe's
    namespace): a signal there would otherwise leave the name behind. A signal
    whose handler was the default action is re-sent to this process, so it
    still ends it, only after the block.
    """
    if not _in_main_thread():
        yield
        return
    pending: list[int] = []
    old = {sig: signal.signal(sig, lambda s, _f: pending.append(s)) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for signum in pending:
            previous = old[signal.Signals(signum)]
            if callable(previous):
                previous(signum, None)
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), signum)


class StopRequest:
    """Turns SIGINT/SIGTERM/SIGHUP into a flag the controller polls, for the duration of a ``with``.

    The first signal is kept (``signum``). Whoever acts on it (passes it on
    to a worker that is still running, cuts a block short) says so with
    ``act()``: only then did the signal change what was measured
    (``during_measurement``); a signal nobody acted on, because both halves
    had already ended by themselves, is ``late`` and the run is complete.
    ``raising()`` makes new signals raise ``Stopped`` for a block (reading a
    trace, which is worth cutting short); ``StopRequest.current()`` is the
    innermost active one, so such a block can be set up by code that was not
    handed the request.
    """

    _active: ClassVar[list[StopRequest]] = []
    #: Whether a StopRequest has been entered in this process (a measurement has started).
    entered: ClassVar[bool] = False

    def __init__(self) -> None:
        self.signum: int | None = None
        self.acted = False
        self._raising = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Self:
        if _in_main_thread():
            for sig in SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        StopRequest._active.append(self)
        StopRequest.entered = True
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
        if self in StopRequest._active:
            StopRequest._active.remove(self)

    @classmethod
    def current(cls) -> StopRequest | None:
        return cls._active[-1] if cls._active else None

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
        if self._raising:
            self.acted = True
            raise Stopped(signum)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal_name(self.signum) if self.signum is not None else ""

    def raise_if_requested(self) -> None:
        """Raise ``Stopped`` when a signal has come (the checkpoint before the measurement starts)."""
        if self.signum is not None:
            raise Stopped(self.signum, before_start=True)

    def act(self) -> None:
        """The request was acted on: a running worker was told to stop (the measurement is cut short)."""
        self.acted = True

    @property
    def during_measurement(self) -> int | None:
        """The signal, if it changed the measurement (was acted on)."""
        return self.signum if self.acted else None

    @property
    def late(self) -> int | None:
        """A signal nobody acted on: it came when the halves had ended by themselves (while storing)."""
        return self.signum if not self.acted else None

    @contextlib.contextmanager
    def raising(self) -> Iterator[None]:
        """Inside the block a signal raises ``Stopped`` (one that came before it does not: it stopped
        the measurement, and what follows, such as reading the trace of what was measured, still runs)."""
        self._raising = True
        try:
            yield
        finally:
            self._raising = False


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """A block that a stop signal cuts short with ``Stopped``, when a StopRequest is active (else no change)."""
    req = StopRequest.current()
    if req is None:
        yield
        return
    with req.raising():
        yield
