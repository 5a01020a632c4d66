"""The host's end of a guest's control channel: requests, events, remote workers, clock exchanges.

One reader thread owns the receiving side: answers go to the request that
asked, worker events (readiness lines, progress, result files, exit) to the
``RemoteWorker`` they name. A ``RemoteWorker`` behaves like the controller's
local ``Worker``, so the measurement code does not care where a half runs.
"""

from __future__ import annotations

import itertools
import mmap
import os
import queue
import socket
import threading
import time
from pathlib import Path
from typing import Any

from latscope.errors import CaptureError, TopologyError
from latscope.files import write_atomic
from latscope.probe.controller import WorkerControl, read_results
from latscope.remote.channel import Channel, ChannelClosed, ChannelError, Frame
from latscope.remote.clock import OffsetEstimate, estimate
from latscope.stopping import Stopped, StopRequest

PROGRESS_SLOT = {"receiver": 0, "sender": 1}


def check_stop() -> None:
    """A stop signal recorded while we wait for the guest (boot, set-up, a worker's start) ends the wait.

    Those waits can last minutes under TCG; nothing has been measured yet, so
    the signal means "give up now", as it does during a host run's set-up.
    """
    req = StopRequest.current()
    if req is not None and req.requested:
        raise Stopped(req.signum or 0, before_start=True)


class GuestLink:
    """Requests to, and events from, the agent in a guest (or, as remote.netlink.AgentLink, on another host)."""

    #: Who is at the other end, and how it goes away, for messages.
    PEER = "guest"
    GONE = "QEMU exited or the channel broke"

    def __init__(self, sock: socket.socket, chan: Channel | None = None) -> None:
        self.sock = sock
        self.chan = chan if chan is not None else Channel(sock.fileno())
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.waiting: dict[int, queue.Queue[Frame]] = {}
        self.workers: dict[str, RemoteWorker] = {}
        self.events: queue.Queue[Frame] = queue.Queue()
        self.closed: str | None = None
        self.reader = threading.Thread(target=self._read, name="latscope-guest-link", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            while True:
                frame = self.chan.recv()
                if frame is None:
                    continue
                h = frame.header
                if "re" in h:
                    q = self.waiting.get(h["re"])
                    if q is not None:
                        q.put(frame)
                elif h.get("wid") in self.workers:
                    self.workers[h["wid"]].on_event(frame)
                else:
                    self.events.put(frame)
        except (ChannelClosed, ChannelError, OSError) as exc:
            self.closed = str(exc) or type(exc).__name__
            for q in list(self.waiting.values()):
                q.put(Frame({"ok": False, "error": f"{self.PEER} channel closed: {self.closed}"}, b"", 0))
            for w in list(self.workers.values()):
                w.on_closed(self.closed)
            self.events.put(Frame({"ev": "closed", "error": self.closed}, b"", 0))

    def send(self, header: dict[str, Any]) -> int:
        with self.lock:
            try:
                return self.chan.send(header)
            except (ChannelClosed, OSError) as exc:
                self.closed = self.closed or str(exc) or type(exc).__name__
                raise CaptureError(f"the {self.PEER} went away ({self.GONE}: {self.closed})") from None

    def request(self, op: str, timeout_s: float = 30.0, **fields: Any) -> Frame:
        """Send a request and wait for its answer; a CaptureError when it fails or times out."""
        rid = next(self.ids)
        q: queue.Queue[Frame] = queue.Queue()
        self.waiting[rid] = q
        try:
            if self.closed:
                raise CaptureError(f"{self.PEER} channel closed: {self.closed}")
            self.send({"op": op, "id": rid, **fields})
            try:
                frame = q.get(timeout=timeout_s)
            except queue.Empty:
                raise CaptureError(f"the {self.PEER} did not answer {op!r} within {timeout_s:.0f} s") from None
        finally:
            self.waiting.pop(rid, None)
        if not frame.header.get("ok"):
            raise CaptureError(f"{self.PEER}: {op}: {frame.header.get('error')}")
        return frame

    def wait_event(self, kind: str, timeout_s: float) -> Frame | None:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            check_stop()
            try:
                frame = self.events.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            if frame.header.get("ev") in (kind, "closed"):
                return frame

    def exchange(self, n: int = 64) -> OffsetEstimate:
        """``n`` clock exchanges over the channel and the offset they bound (remote.clock)."""
        t1, t2, t3, t4 = [], [], [], []
        for _ in range(n):
            check_stop()
            rid = next(self.ids)
            q: queue.Queue[Frame] = queue.Queue()
            self.waiting[rid] = q
            try:
                sent = self.send({"op": "time", "id": rid})
                frame = q.get(timeout=10)
            except queue.Empty:
                raise CaptureError(f"the {self.PEER} stopped answering clock exchanges") from None
            finally:
                self.waiting.pop(rid, None)
            if not frame.header.get("ok"):
                raise CaptureError(f"{self.PEER} clock exchange: {frame.header.get('error')}")
            t1.append(sent)
            t2.append(int(frame.header["t2"]))
            t3.append(int(frame.header["t3"]))
            t4.append(frame.rx_ns)
        return estimate(t1, t2, t3, t4)

    def spawn(self, role: str, spec: dict[str, Any], stage: Path, progress: Path | None) -> RemoteWorker:
        wid = f"{role}-{next(self.ids)}"
        worker = RemoteWorker(self, wid, role, stage, progress)
        if spec.get("stream_log"):
            # The stream log belongs with the run (the spec names where), results in the work dir.
            worker.log_dir = Path(spec["stream_log"]).parent
        self.workers[wid] = worker
        self.request("spawn", wid=wid, role=role, spec=spec)
        return worker

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class _Exit:
    """Stands in for Popen where the controller reads a worker's exit status."""

    returncode: int | None = None


class RemoteWorker(WorkerControl):
    """A worker running in the guest (or on a network agent), seen through the channel."""

    KILL_WAIT_S = 10.0

    def __init__(self, link: GuestLink, wid: str, role: str, stage: Path, progress: Path | None) -> None:
        self.link, self.wid, self.role = link, wid, role
        self.result = stage / f"{role}.npz"
        self.stderr_path = stage / f"{role}.stderr"
        self.stage = stage
        self.log_dir = stage
        self.proc = _Exit()
        self.ended = threading.Event()
        self.lines: queue.Queue[str] = queue.Queue()
        self.error: str | None = None
        self.progress: memoryview | None = None
        self._mm = None
        if progress is not None:
            fd = os.open(progress, os.O_RDWR)
            try:
                self._mm = mmap.mmap(fd, 32)
            finally:
                os.close(fd)
            self.progress = memoryview(self._mm).cast("q")
        self.files: list[str] = []

    def on_event(self, frame: Frame) -> None:
        h = frame.header
        ev = h.get("ev")
        if ev == "line":
            self.lines.put(str(h.get("line", "")))
        elif ev == "progress" and self.progress is not None:
            values = h.get("values") or []
            slot = PROGRESS_SLOT.get(self.role, 0)
            if slot < len(values):
                self.progress[slot] = int(values[slot])
        elif ev == "file":
            name = os.path.basename(str(h.get("name", "")))
            if name:
                where = self.log_dir if name.startswith("stream-") else self.stage
                write_atomic(where / name, frame.payload)
                self.files.append(name)
        elif ev == "exit":
            self.proc.returncode = int(h.get("code", -1))
            self.ended.set()

    def on_closed(self, why: str) -> None:
        if not self.ended.is_set():
            self.error = f"lost with its {self.link.PEER} ({self.link.GONE}: {why})"
            self.proc.returncode = -1
            self.ended.set()

    def alive(self) -> bool:
        return not self.ended.is_set()

    def signal(self, sig: int) -> None:
        if self.alive():
            try:
                self.link.request("signal", timeout_s=10, wid=self.wid, sig=int(sig))
            except CaptureError:
                pass

    def wait(self, timeout_s: float) -> bool:
        return self.ended.wait(timeout_s)

    def kill(self) -> None:
        super().kill()
        self._release()

    def _release(self) -> None:
        if self.progress is not None:
            self.progress.release()
            self.progress = None
        if self._mm is not None:
            self._mm.close()
            self._mm = None

    def wait_ready(self, timeout_s: float) -> int:
        """Block until the guest's receiver says it listens; its port."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            check_stop()
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if not self.alive():
                    break
                continue
            if line.startswith("ready"):
                parts = line.split()
                return int(parts[1]) if len(parts) > 1 else 0
        if self.alive():
            self.stop()
            raise CaptureError(f"the {self.link.PEER}'s {self.role} did not become ready within {timeout_s:.0f} s")
        self.wait(10.0)
        raise CaptureError(self._death())

    def _death(self) -> str:
        if self.error:
            return self.error
        info = self.result.with_name(self.result.name + ".json")
        if info.exists():
            import json

            err = json.loads(info.read_text()).get("error")
            if err:
                return f"{self.link.PEER} {self.role}: {err}"
        return f"the {self.link.PEER}'s {self.role} exited with status {self.proc.returncode} before it was ready: " \
               f"{self.stderr_tail()}"

    def collect(self):
        """The worker's columns and info, as the local Worker gives them."""
        if self.error and not Path(str(self.result) + ".json").exists():
            raise CaptureError(self.error)
        return read_results(self.role, self.result, self.proc.returncode, self.stderr_tail())


def connect_error(why: str, console: str) -> TopologyError:
    """A guest that did not come up: the telling console line in the message, the tail as its detail."""
    lines = console.splitlines()
    telling = [ln for ln in lines if any(k in ln for k in ("Kernel panic", "latscope-init:", "Traceback", "Error"))]
    key = telling[-1].split("]", 1)[-1].strip() if telling else ""
    err = TopologyError(f"{why}" + (f": {key}" if key else "") + " (guest console below)" * bool(lines))
    err.detail = console  # type: ignore[attr-defined]
    return err
