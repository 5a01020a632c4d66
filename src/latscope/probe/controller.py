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
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latscope.errors import CaptureError, error_from
from latscope.probe.spec import ReceiverSpec, SenderSpec, to_json
from latscope.probe.worker import PARENT_ENV, PROGRESS_SLOTS, READY, open_progress

# StopRequest lives with the rest of the signal policy; callers know it as controller.StopRequest.
from latscope.stopping import StopRequest, signal_name


class WorkerControl:
    """What ending a worker means, wherever it runs: subclasses say how to signal and wait."""

    role: str
    stderr_path: Path
    #: How long a SIGKILLed worker may take to be gone (a guest's answers travel further).
    KILL_WAIT_S = 5.0

    def alive(self) -> bool:
        raise NotImplementedError

    def signal(self, sig: int) -> None:
        raise NotImplementedError

    def wait(self, timeout_s: float) -> bool:
        """True when the worker ended within ``timeout_s``."""
        raise NotImplementedError

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
            self.wait(self.KILL_WAIT_S)

    def stderr_tail(self) -> str:
        try:
            lines = [ln for ln in self.stderr_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1].strip() if lines else ""


@dataclass
class Worker(WorkerControl):
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

    def collect(self) -> tuple[dict[str, np.ndarray] | None, dict[str, Any]]:
        """The worker's columns (None if it wrote none) and its info document."""
        return read_results(self.role, self.result, self.proc.returncode, self.stderr_tail())

    def wait_ready(self, timeout_s: float) -> int:
        """Block until the receiver says it listens; its port."""
        return wait_ready(self, timeout_s)


def read_results(role: str, result: Path, returncode: int | None,
                 stderr_tail: str) -> tuple[dict[str, np.ndarray] | None, dict[str, Any]]:
    """A worker's columns (RESULT.npz, None if it wrote none) and info (RESULT.npz.json)."""
    info_path = Path(str(result) + ".json")
    if not info_path.exists():
        raise CaptureError(
            f"the {role} exited with status {returncode} without results" + (f": {stderr_tail}" if stderr_tail else "")
        )
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        raise CaptureError(f"the {role}'s account of its run ({info_path.name}) is unreadable: {exc}") from None
    if not isinstance(info, dict):
        raise CaptureError(f"the {role}'s account of its run ({info_path.name}) is not a JSON object")
    arrays = None
    if result.exists():
        try:
            with np.load(result) as npz:  # no pickles: allow_pickle is off
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise CaptureError(f"the {role}'s result ({result.name}) is damaged: {exc}") from None
        lengths = {len(a) if a.ndim == 1 else -1 for a in arrays.values()}
        if len(lengths) > 1 or -1 in lengths or any(a.dtype.kind not in "iu" for a in arrays.values()):
            raise CaptureError(f"the {role}'s result ({result.name}) is damaged: its columns differ in length "
                               "or type")
    return arrays, info


def ended_how(worker: Worker) -> str:
    """How a worker that ended without results went: "killed by SIGKILL", "exited with status 1: ..."."""
    died = getattr(worker, "error", None)  # a guest's worker whose guest went away
    if died:
        return died
    code = worker.proc.returncode
    if code is not None and code < 0:
        return f"killed by {signal_name(-code)}"
    tail = worker.stderr_tail()
    return f"exited with status {code}" + (f": {tail}" if tail else "")


def collect_half(worker: Worker) -> tuple[dict[str, np.ndarray] | None, dict[str, Any]]:
    """``worker.collect()``; for a worker that ended without results (killed, crashed), no columns and
    ``{"died": how}``, so that the other half's packets are kept (latscope.probe.ending says what is true)."""
    try:
        return worker.collect()
    except CaptureError as exc:
        if worker.alive():
            raise
        how = ended_how(worker)
        # a worker that ended well but whose result cannot be read: say what is wrong with it
        return None, {"died": f"{how}; {exc}" if worker.proc.returncode == 0 else how}


def ended_early(worker: Worker) -> bool:
    """True when ``worker`` has ended other than by finishing its work: killed, crashed, failed or signalled."""
    if worker.alive():
        return False
    if worker.proc.returncode != 0:
        return True
    try:
        info = json.loads(Path(str(worker.result) + ".json").read_text())
    except (OSError, ValueError):
        return True
    return bool(info.get("interrupted") or info.get("error"))


def progress_file(workdir: Path, name: str = "progress") -> Path:
    """Create the shared progress counters in ``workdir``."""
    path = workdir / name
    path.write_bytes(b"\0" * 8 * PROGRESS_SLOTS)
    return path


def spawn(role: str, spec: SenderSpec | ReceiverSpec, workdir: Path, progress: Path) -> Worker:
    """Start a worker for ``role`` with ``spec``; it inherits our namespace and enters its own."""
    return spawn_doc(role, to_json(spec), workdir, progress)


def spawn_doc(role: str, spec: dict[str, Any], workdir: Path, progress: Path) -> Worker:
    """``spawn`` with the spec as JSON (a network agent gets it so, for any role the worker knows)."""
    spec_path = workdir / f"{role}-spec.json"
    spec_path.write_text(json.dumps(spec))
    result = workdir / f"{role}.npz"
    stderr_path = workdir / f"{role}.stderr"
    with open(stderr_path, "w") as err:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "latscope.probe.worker", role, str(spec_path), str(result), str(progress)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                # Own process group: a Ctrl-C reaches the controller, which stops
                # the workers in order (sender first) so the receiver sees the end.
                start_new_session=True,
                # The worker ends when we do (PR_SET_PDEATHSIG, see worker.die_with_parent); it checks
                # that we are still its parent, in case we died before it could ask. The signal
                # fires when the *thread* that forked it ends: spawn from a thread that outlives the run.
                env={**os.environ, PARENT_ENV: str(os.getpid())},
            )
        except OSError as exc:  # the interpreter cannot be run (a virtual environment this user cannot read)
            raise CaptureError(f"cannot start the {role} with {sys.executable}: {exc.strerror or exc}") from None
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
        _arrays, info = collect_half(worker)
        if info.get("died"):
            raise CaptureError(f"the {worker.role} ended before it was ready ({info['died']}); nothing was stored")
        if info.get("error"):
            raise error_from(info.get("error_type"), str(info["error"]))
        raise CaptureError(f"the {worker.role} stopped before it was ready")
    worker.stop()
    raise CaptureError(f"the {worker.role} did not become ready within {timeout_s:.0f} s")


@contextlib.contextmanager
def progress_view(path: Path) -> Iterator[memoryview]:
    """Read-only view of the progress counters while workers run."""
    view, mm = open_progress(str(path))
    try:
        yield view
    finally:
        view.release()
        mm.close()


def watch(worker: Worker, stop: StopRequest, on_tick: Callable[[], None] | None, tick_s: float = 0.2,
          partners: tuple[Worker, ...] = ()) -> None:
    """Wait for ``worker`` to end, passing a stop request on to it once, ticking the progress display.

    A partner (the receiver, when ``worker`` is the sender) that ends early
    (killed, crashed, stopped by a signal) stops ``worker`` too: nobody is
    left to observe what it would go on doing.
    """
    if on_tick is None:
        # Nothing to display: wake rarely, the measured CPUs may be ours too;
        # a stop request is still passed on within a second.
        tick_s = 1.0
    signalled = False
    while worker.alive():
        if not signalled and (stop.requested or any(ended_early(p) for p in partners)):
            if stop.requested:
                stop.act()
            worker.signal(signal.SIGTERM)
            signalled = True
        if on_tick is not None:
            on_tick()
        worker.wait(tick_s)
    if on_tick is not None:
        on_tick()


def finish_receiver(receiver: Worker, sender: Worker, stop: StopRequest, grace_s: float) -> None:
    """Give the receiver ``grace_s`` to end by itself after its sender's end packet (0.5 s when the run
    was stopped or the sender ended early, e.g. killed: no end packet is coming), then stop it."""
    quick = stop.requested or ended_early(sender)
    if not receiver.wait(0.5 if quick else grace_s):
        if stop.requested:
            stop.act()
        receiver.stop()


def watch_all(workers: list[Any], stop: StopRequest, on_tick: Callable[[], None] | None, tick_s: float = 0.2,
              partners: list[Any] | None = None) -> None:
    """``watch`` for several workers (local or in a guest): until all have ended.

    ``partners[i]``, when given, is the receiver of ``workers[i]``'s stream: if it ends early
    (killed, crashed, stopped by a signal) ``workers[i]`` is stopped, as in ``watch``.
    """
    if on_tick is None:
        tick_s = 1.0
    pairs = list(zip(workers, partners or [None] * len(workers), strict=True))
    signalled: set[int] = set()
    while any(w.alive() for w in workers):
        for i, (w, partner) in enumerate(pairs):
            if i not in signalled and w.alive() and (stop.requested or
                                                     (partner is not None and ended_early(partner))):
                if stop.requested:
                    stop.act()
                w.signal(signal.SIGTERM)
                signalled.add(i)
        if on_tick is not None:
            on_tick()
        alive = [w for w in workers if w.alive()]  # the last one may have ended since the loop's test
        if alive:
            alive[0].wait(tick_s)
    if on_tick is not None:
        on_tick()
