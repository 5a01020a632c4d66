"""Test-only pauses at phases too short to hit with a signal from outside. Never set outside tests.

``LATSCOPE_TEST_HOLD=PHASE:DIR`` makes a process that reaches PHASE create
``DIR/PHASE.reached`` and wait (at most ``HOLD_MAX_S``) until ``DIR/PHASE.go``
exists, so a test can send a signal while the process is certainly in that
phase. Phases: ``boot`` (the start of a measurement, before anything is
created), ``probe`` (the environment probe's namespace exists), ``trace-read``
(the trace of a ``--trace`` run is being read), ``storing`` (the measurement
is over, the run not yet committed), ``sender-start`` and ``receiver-start``
(a worker process has started, before its signal handlers). Unset, ``hold``
costs one dictionary lookup.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from latscope.files import write_atomic

ENV = "LATSCOPE_TEST_HOLD"
HOLD_MAX_S = 60.0


def hold(phase: str) -> None:
    """Wait here when a test asked to (see the module docstring)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    want, _, where = spec.partition(":")
    if want != phase or not where:
        return
    d = Path(where)
    # Renamed into place: a test that sees the file must find the pid in it.
    write_atomic(d / f"{phase}.reached", str(os.getpid()))
    deadline = time.monotonic() + HOLD_MAX_S
    while not (d / f"{phase}.go").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
