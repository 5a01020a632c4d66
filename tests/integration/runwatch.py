"""Test-side readiness signals of a `latscope run` in progress, instead of waiting for time to pass.

A run keeps shared counters (received, sent) in a ``progress`` file in its
workers' directory (/dev/shm/latscope-work-PID-*, else the staging directory) while the workers run (latscope.probe.worker); the
file appears once the topology is up, just before the receiver starts. The
test's results root is private, so the one staging directory in it is the
run under test.
"""

from __future__ import annotations

import struct
import subprocess
import time
from pathlib import Path

RECEIVED, SENT = 0, 1


def progress_file(results: Path, pid: int | None = None) -> Path | None:
    """The progress counters of the run being made in ``results`` by process ``pid`` (None before the
    workers start): in the workers' directory in /dev/shm, or the staging directory when /dev/shm has no room."""
    found = sorted(Path("/dev/shm").glob(f"latscope-work-{pid}-*/progress")) if pid is not None else []
    found += sorted(results.glob(".*/progress"))
    return found[0] if found else None


def counters(path: Path) -> tuple[int, int]:
    """(received, sent) as the workers last wrote them; (0, 0) if the run has just ended and taken the file."""
    try:
        data = path.read_bytes()[:16]
    except FileNotFoundError:
        return 0, 0
    if len(data) < 16:
        return 0, 0
    received, sent = struct.unpack("=qq", data)
    return received, sent


def wait_for_progress(results: Path, proc: subprocess.Popen, timeout_s: float = 60.0) -> Path:
    """Block until the run of ``proc`` has its progress file (topology up, workers about to start)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        path = progress_file(results, proc.pid)
        if path is not None:
            return path
        if proc.poll() is not None:
            raise AssertionError(f"latscope ended (status {proc.returncode}) before its workers started")
        time.sleep(0.01)
    raise AssertionError(f"no progress file in {results} within {timeout_s:.0f} s")


def wait_for_packets(results: Path, proc: subprocess.Popen, received: int, timeout_s: float = 60.0) -> int:
    """Block until the run of ``proc`` has received at least ``received`` packets; return the count seen."""
    path = wait_for_progress(results, proc, timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got, _sent = counters(path)
        if got >= received:
            return got
        if proc.poll() is not None:
            raise AssertionError(f"latscope ended (status {proc.returncode}) after {got} of {received} packets")
        time.sleep(0.01)
    raise AssertionError(f"the run received only {counters(path)[0]} of {received} packets in {timeout_s:.0f} s")
