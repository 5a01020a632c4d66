"""Starting, watching and stopping worker processes from the root namespace."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latscope.errors import CaptureError, error_from
from latscope.probe.spec import ReceiverSpec, SenderSpec, to_json
from latscope.probe.worker import PROGRESS_SLOTS, READY, open_progress


@dataclass
class Worker:
    """A running sender or receiver process and where it leaves its results."""

    role: str
    proc: subprocess.Popen[str]
    result: Path
    stderr_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> bool:
        """True when the process ended within ``timeout_s``."""
        try:
            self.proc.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, grace_s: float = 5.0) -> None:
        """Ask the worker to stop (SIGUSR1 keeps its data), then kill it if it does not."""
        if not self.alive():
            return
        self.signal(signal.SIGUSR1)
        if not self.wait(grace_s):
            self.kill()

    def kill(self) -> None:
        """End the worker now (cleanup after an error); its results are lost."""
        if self.alive():
            self.signal(signal.SIGKILL)
            self.wait(5.0)

    def collect(self) -> tuple[dict[str, np.ndarray] | None, dict[str, Any]]:
        """The worker's columns (None if it wrote none) and its info document."""
        info_path = Path(str(self.result) + ".json")
        if not info_path.exists():
            tail = self.stderr_tail()
            raise CaptureError(
                f"the {self.role} exited with status {self.proc.returncode} without results"
                + (f": {tail}" if tail else "")
            )
        info = json.loads(info_path.read_text())
        arrays = None
        if self.result.exists():
            with np.load(self.result) as npz:
                arrays = {k: npz[k] for k in npz.files}
        return arrays, info

    def stderr_tail(self) -> str:
        try:
            lines = [ln for ln in self.stderr_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1].strip() if lines else ""


def progress_file(workdir: Path) -> Path:
    """Create the shared progress counters in ``workdir``."""
    path = workdir / "progress"
    path.write_bytes(b"\0" * 8 * PROGRESS_SLOTS)
    return path


def spawn(role: str, spec: SenderSpec | ReceiverSpec, workdir: Path, progress: Path) -> Worker:
    """Start a worker for ``role`` with ``spec``; it inherits our namespace and enters its own."""
    spec_path = workdir / f"{role}-spec.json"
    spec_path.write_text(json.dumps(to_json(spec)))
    result = workdir / f"{role}.npz"
    stderr_path = workdir / f"{role}.stderr"
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "latscope.probe.worker", role, str(spec_path), str(result), str(progress)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            # Own process group: a Ctrl-C reaches the controller, which stops
            # the workers in order (sender first) so the receiver sees the end.
            start_new_session=True,
        )
    return Worker(role, proc, result, stderr_path)


def wait_ready(worker: Worker, timeout_s: float = 20.0) -> int:
    """Block until the receiver says it listens; return its port. Fail with its own error if it died."""
    assert worker.proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    fd = worker.proc.stdout.fileno()
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 256)
            if not chunk:
                break
            buf += chunk
            for line in buf.splitlines(keepends=True):
                if line.startswith(READY.encode()) and line.endswith(b"\n"):
                    parts = line.split()
                    return int(parts[1]) if len(parts) > 1 else 0
        elif not worker.alive():
            break
    worker.wait(2.0)
    if not worker.alive():
        _arrays, info = worker.collect()
        if info.get("error"):
            raise error_from(info.get("error_type"), str(info["error"]))
        raise CaptureError(f"the {worker.role} stopped before it was ready")
    worker.stop()
    raise CaptureError(f"the {worker.role} did not become ready within {timeout_s:.0f} s")


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the controller polls, for the duration of a ``with``."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def progress_view(path: Path) -> Iterator[memoryview]:
    """Read-only view of the progress counters while workers run."""
    view, mm = open_progress(str(path))
    try:
        yield view
    finally:
        view.release()
        mm.close()


def watch(worker: Worker, stop: StopRequest, on_tick: Callable[[], None] | None, tick_s: float = 0.2) -> None:
    """Wait for ``worker`` to end, passing a stop request on to it once, ticking the progress display."""
    if on_tick is None:
        # Nothing to display: wake rarely, the measured CPUs may be ours too;
        # a stop request is still passed on within a second.
        tick_s = 1.0
    signalled = False
    while worker.alive():
        if stop.requested and not signalled:
            worker.signal(signal.SIGTERM)
            signalled = True
        if on_tick is not None:
            on_tick()
        worker.wait(tick_s)
    if on_tick is not None:
        on_tick()
