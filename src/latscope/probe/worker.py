"""A sender or receiver worker process: ``python -m latscope.probe.worker ROLE SPEC RESULT``.

The controller stays in the root namespace and starts one worker per half;
each worker opens its trace marker (if any) first, enters its namespace with
setns, applies its real-time knobs, runs its loop and writes its columns to
RESULT (.npz) and what happened to RESULT.json, after the loop has ended.
SIGINT and SIGTERM end the loop early; what was measured is still written.
A worker ends with the process that started it (``die_with_parent``): a
controller killed with SIGKILL leaves no worker sending for the rest of the
count.
"""

from __future__ import annotations

import json
import mmap
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from latscope import netns
from latscope.errors import ConfigError, LatscopeError
from latscope.files import atomic_output, write_atomic
from latscope.libc import set_thread_name
from latscope.probe import rt
from latscope.probe.clock import RealClock, tai_offset_ns
from latscope.probe.columns import write_npz
from latscope.probe.hwstamp import hardware_timestamping
from latscope.probe.receiver import ReceiverResult, run_receiver
from latscope.probe.reflector import ReflectorResult, enable_timestamps, run_reflector
from latscope.probe.sender import Interrupted, SenderResult, run_sender
from latscope.probe.sockets import open_receiver, open_sender
from latscope.probe.spec import (
    ROLES,
    ReceiverSpec,
    ReflectorSpec,
    SenderSpec,
    spec_from_json,
)
from latscope.testhooks import hold

READY = "ready"
PROGRESS_SLOTS = 4  # received, sent, reserved, reserved
#: The pid of the controller that started this worker (set by latscope.probe.controller.spawn).
PARENT_ENV = "LATSCOPE_CONTROLLER_PID"


def die_with_parent(expected: str | None) -> bool:
    """SIGTERM when the parent ends (the loop stops as on a stop request); False if it is gone already.

    SIGTERM rather than SIGKILL: the worker still restores what it changed
    (the NIC's timestamping setting) on the way out. PR_SET_PDEATHSIG
    only covers deaths after the call, so the parent is checked too: if it
    died in between, this process has been reparented already.
    """
    rt.parent_death_signal(signal.SIGTERM)
    return not (expected and expected.isdigit() and os.getppid() != int(expected))


def open_progress(path: str | None) -> tuple[memoryview, Any]:
    """A shared int64[4] the controller polls for the progress bar (anonymous when no path)."""
    if path is None:
        mm = mmap.mmap(-1, 8 * PROGRESS_SLOTS)
    else:
        fd = os.open(path, os.O_RDWR)
        try:
            mm = mmap.mmap(fd, 8 * PROGRESS_SLOTS)
        finally:
            os.close(fd)
    return memoryview(mm).cast("q"), mm


class _Stopper:
    """Signal handlers that end the loop by raising Interrupted, and the receiver's idle watchdog."""

    def __init__(self, progress: memoryview, spec: ReceiverSpec | None) -> None:
        self.armed = True
        self.signum: int | None = None
        self.progress = progress
        self.spec = spec
        self.started = time.monotonic_ns()
        self.last_value = 0
        self.last_change = self.started

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        if self.spec is not None:
            signal.signal(signal.SIGALRM, self._on_alarm)
            signal.setitimer(signal.ITIMER_REAL, 0.25, 0.25)

    def disarm(self) -> None:
        self.armed = False
        if self.spec is not None:
            signal.setitimer(signal.ITIMER_REAL, 0, 0)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.armed:
            self.armed = False
            self.signum = signum
            raise Interrupted("stopped" if signum == signal.SIGUSR1 else "interrupted")

    def _on_alarm(self, _signum: int, _frame: Any) -> None:
        if not self.armed or self.spec is None:
            return
        now = time.monotonic_ns()
        value = self.progress[0]
        if value != self.last_value:
            self.last_value, self.last_change = value, now
            return
        if value == 0:
            if self.spec.first_timeout_ns and now - self.started > self.spec.first_timeout_ns:
                self.armed = False
                raise Interrupted("no packets")
        elif now - self.last_change > self.spec.idle_timeout_ns:
            self.armed = False
            raise Interrupted("idle")


def _open_optional(path: str | None, append: bool = False) -> int | None:
    if not path:
        return None
    flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_APPEND | os.O_CREAT if append else 0)
    return os.open(path, flags, 0o644)


def _prepare(spec: SenderSpec | ReceiverSpec) -> tuple[int | None, int | None, dict[str, Any]]:
    """Marker fd (opened before setns), namespace, affinity, priority, mlock."""
    marker_fd = _open_optional(spec.trace_marker)
    if spec.netns:
        netns.enter(spec.netns)
    log_fd = _open_optional(spec.stream_log, append=True)
    rt.set_affinity(spec.cpu)
    rt.set_fifo(spec.prio)
    rt.minimal_timer_slack()
    locked = rt.lock_memory() if spec.mlock else False
    sched = rt.scheduling_in_force()
    sched["mlock"] = locked
    return marker_fd, log_fd, sched


def run_role(role: str, spec_doc: dict[str, Any], result: Path, progress_path: str | None) -> int:
    """Run one half; write RESULT.npz and RESULT.json; return the process exit code."""
    info: dict[str, Any] = {"role": role}
    # "python3" twice in a trace says nothing; these names say which half delayed whom.
    set_thread_name({"receiver": "latscope-rx", "reflector": "latscope-echo"}.get(role, "latscope-tx"))
    progress, _mm = open_progress(progress_path)
    spec = spec_from_json(role, spec_doc)
    stopper = _Stopper(progress, spec if isinstance(spec, ReceiverSpec) else None)
    res: SenderResult | ReceiverResult | ReflectorResult | None = None
    res_ring: dict[str, Any] | None = None
    try:
        stopper.install()
        marker_fd, log_fd, info["scheduling"] = _prepare(spec)
        clock = RealClock(spin_ns=getattr(spec, "spin_ns", 0))
        endpoint = spec.listen if isinstance(spec, ReceiverSpec) else spec.dest
        with hardware_timestamping(endpoint.ifname, spec.hw_timestamps) as info["hw_timestamping"]:
            if isinstance(spec, ReflectorSpec):
                if spec.listen.family == "packet":
                    raise ConfigError("round trips (--mode rtt) work over UDP, not raw Ethernet (--l2)")
                sock = open_receiver(spec.listen)
                enable_timestamps(sock)
                with rt.gc_paused():
                    res = run_reflector(spec, sock, clock, progress=progress,
                                        on_ready=lambda: print(READY, _bound_port(sock), flush=True))
            elif spec.ring:
                res_ring = _run_ring(spec, clock, sock_ready=lambda sock: print(READY, _bound_port(sock),
                                                                                 flush=True))
            elif isinstance(spec, ReceiverSpec):
                sock = open_receiver(spec.listen)
                with rt.gc_paused():
                    res = run_receiver(spec, sock, clock, progress=progress, log_fd=log_fd, marker_fd=marker_fd,
                                       on_ready=lambda: print(READY, _bound_port(sock), flush=True))
            else:
                out = open_sender(spec.dest, tos=spec.tos, so_priority=spec.so_priority,
                                  txtime=spec.txtime_offset_ns is not None, echo=spec.echo)
                with rt.gc_paused():
                    res = run_sender(spec, out, clock, progress=progress, log_fd=log_fd, marker_fd=marker_fd,
                                     tai_offset_ns=tai_offset_ns())
        stopper.disarm()
        info["ended_ns"] = time.clock_gettime_ns(time.CLOCK_REALTIME)
    except Interrupted as exc:
        stopper.disarm()
        info["interrupted_before_start"] = str(exc)
    except LatscopeError as exc:
        stopper.disarm()
        info["error"] = str(exc)
        info["error_type"] = type(exc).__name__
    except OSError as exc:
        stopper.disarm()
        info["error"] = f"{role}: {exc.strerror or exc}"
        info["error_type"] = "CaptureError"
    rt.unlock_memory()
    if stopper.signum is not None:
        # Which signal ended the loop tells a stop request (the controller's SIGTERM/SIGUSR1) from a
        # signal someone sent to this worker directly.
        info["signal"] = signal.Signals(stopper.signum).name
    if res is not None:
        _write_columns(result, res)
        info.update(_describe(res))
    if res_ring is not None:
        info.update(res_ring)
    _write_info(result, info)
    return 1 if "error" in info else 0


def _run_ring(spec: SenderSpec | ReceiverSpec, clock: RealClock, sock_ready: Any) -> dict[str, Any]:
    """`latscope monitor`'s endless halves: columns go to the shared ring as they are measured."""
    from latscope.probe import ring as ring_mod
    from latscope.probe import ringloop

    assert spec.ring is not None
    if isinstance(spec, SenderSpec):
        ring = ring_mod.Ring(spec.ring, ring_mod.SENDER_COLUMNS, spec.ring_slots)
        out = open_sender(spec.dest, tos=spec.tos, so_priority=spec.so_priority, txtime=False, echo=False)
        with rt.gc_paused():
            return ringloop.run_ring_sender(spec, out, clock, ring)
    ring = ring_mod.Ring(spec.ring, ring_mod.RECEIVER_COLUMNS, spec.ring_slots)
    sock = open_receiver(spec.listen)
    with rt.gc_paused():
        return ringloop.run_ring_receiver(spec, sock, clock, ring, on_ready=lambda: sock_ready(sock))


def _bound_port(sock) -> int:
    """The UDP port the receiver got (the controller asked for any free one with port 0)."""
    name = sock.getsockname()
    return int(name[1]) if sock.family != socket.AF_PACKET else 0


def _write_columns(result: Path, res: SenderResult | ReceiverResult | ReflectorResult) -> None:
    if isinstance(res, SenderResult):
        n = res.done
        columns = {k: (getattr(res, k), n) for k in ("sched", "wake", "send", "tx_sw", "tx_hw", "flags")}
        if res.echo is not None:
            e = res.echo
            columns.update({f"echo_{k}": (getattr(e, k), n)
                            for k in ("rx_sw", "rx_hw", "rx_user", "far_rx", "far_tx", "flags")})
    elif isinstance(res, ReflectorResult):
        n = res.capacity
        columns = {k: (getattr(res, k), n)
                   for k in ("far_rx", "far_rx_is_hw", "far_tx", "far_tx_is_hw", "far_user", "flags")}
    else:
        n = res.capacity
        names = ("sched", "wake", "send", "tx", "tx_is_hw", "rx_sw", "rx_hw", "rx_user", "flags")
        columns = {k: (getattr(res, k), n) for k in names}
    with atomic_output(result) as fh:
        write_npz(fh, columns)


def _describe(res: SenderResult | ReceiverResult | ReflectorResult) -> dict[str, Any]:
    if isinstance(res, SenderResult):
        return {"done": res.done, "send_failed": res.send_failed, "interrupted": res.interrupted,
                "base_time_ns": res.base_time_ns, **res.info}
    if isinstance(res, ReflectorResult):
        return {"received": res.received, "duplicated": res.duplicated, "foreign": dict(res.foreign),
                "stream": res.stream, "count": res.count, "sent_reported": res.sent_reported, "hello": res.hello,
                "stop_reason": res.stop_reason, "interrupted": res.interrupted, **res.info}
    return {
        "received": res.received, "duplicated": res.duplicated, "reordered": res.reordered,
        "foreign": dict(res.foreign), "stream": res.stream, "count": res.count,
        "sent_reported": res.sent_reported, "hello": res.hello, "stop_reason": res.stop_reason,
        "interrupted": res.interrupted, "first_rx_ns": res.first_rx_ns, "last_rx_ns": res.last_rx_ns,
        **res.info,
    }


def _write_info(result: Path, info: dict[str, Any]) -> None:
    write_atomic(Path(str(result) + ".json"), json.dumps(info, default=str))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (3, 4) or args[0] not in ROLES:
        print(f"usage: python -m latscope.probe.worker {'|'.join(ROLES)} SPEC.json RESULT.npz [PROGRESS]",
              file=sys.stderr)
        return 2
    if not die_with_parent(os.environ.get(PARENT_ENV)):
        print(f"latscope worker: the controller (pid {os.environ.get(PARENT_ENV)}) is gone; not starting",
              file=sys.stderr)
        return 1
    role, spec_path, result = args[0], Path(args[1]), Path(args[2])
    hold(f"{role}-start")
    progress = args[3] if len(args) == 4 else None
    return run_role(role, json.loads(spec_path.read_text()), result, progress)


if __name__ == "__main__":
    sys.exit(main())
