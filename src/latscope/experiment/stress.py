"""Stress loads beside a measurement: iperf3 floods on the probe's path, fio writes, stress-ng hogs.

``StressCapture`` is one Capture (latscope.session) for all the ``--stress``
loads of a run: ``start`` launches them after the topology is up and returns
once each is really running (iperf3 connected, fio writing, stress-ng's
workers forked); ``stop`` ends them after the measurement and reads what they
achieved; ``close`` kills whatever is left, by pid, on every path out.
Each tool's own time limit is the run's duration plus ``margin_s``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latscope.errors import CaptureError, ConfigError
from latscope.experiment import results
from latscope.experiment.procs import (
    TCP_ESTABLISHED,
    TCP_LISTEN,
    Proc,
    children_of,
    now_iso,
    sockets_of,
)
from latscope.experiment.spec import StressSpec
from latscope.stopping import StopRequest

#: How long a load may take to be running (iperf3 connected, fio writing, workers forked).
READY_TIMEOUT_S = 20.0
#: iperf3's own port; the floods take ports from here on inside namespaces (never the probe's).
NET_PORT_BASE = 5201
OUT_DIR = "stress"


def tool_limit_s(duration_s: float) -> int:
    """The tools' own time limit: the run's length and a margin for set-up and the end of the run."""
    return int(duration_s + 30 + 0.1 * duration_s) + 1


@dataclass
class Load:
    """One spec while it runs: its processes and, afterwards, what it achieved."""

    spec: StressSpec
    index: int
    procs: list[Proc] = field(default_factory=list)
    ready_at: str | None = None
    achieved: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        ended = [p.ended for p in self.procs if p.ended]
        return {"kind": self.spec.kind, "spec": self.spec.text, "tool": self.spec.tool,
                "options": self.spec.options(), "argv": [p.argv for p in self.procs],
                "started": self.ready_at, "ended": max(ended) if ended else None,
                "exit_status": [p.exit_status for p in self.procs], "achieved": self.achieved,
                "processes": [p.describe() for p in self.procs]}


@dataclass
class StressCapture:
    """All the ``--stress`` loads of one run (see the module docstring)."""

    specs: Sequence[StressSpec]
    duration_s: float
    #: The probe's address family (inet or inet6): the floods use the same one.
    family: str = "inet"
    #: The probe's UDP port, which no flood may take.
    probe_port: int | None = None
    #: Where io writes without dir= (the stream logs' directory, known once LogFs has started).
    default_dir: Callable[[], str | None] = lambda: None
    ready_timeout_s: float = READY_TIMEOUT_S
    loads: list[Load] = field(default_factory=list)
    _closed: bool = False

    # -- Capture protocol --------------------------------------------------

    def start(self, workdir: Path, path: Any) -> dict[str, Any]:
        out = workdir / OUT_DIR
        out.mkdir(exist_ok=True)
        limit = tool_limit_s(self.duration_s)
        ports = _Ports(path, self.probe_port)
        for i, spec in enumerate(self.specs):
            load = Load(spec, i)
            self.loads.append(load)
            if spec.kind == "net":
                self._start_net(load, out, path, limit, ports)
            elif spec.kind == "io":
                self._start_io(load, out, limit)
            else:
                self._start_stressng(load, out, limit)
        return {}

    def stop(self, workdir: Path) -> dict[str, Any]:
        for load in self.loads:
            # The clients first: a one-off iperf3 server ends by itself once its client has gone.
            for p in sorted(load.procs, key=lambda p: p.role.startswith("server")):
                p.finish()
            load.achieved = self._achieved(load)
            self._remove_files(load)
        return {"record": {"stress": [load.record() for load in self.loads]}, "completeness": {},
                "config": {"stress": [s.text for s in self.specs]}}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for load in self.loads:
            for p in load.procs:
                p.finish(grace_s=2.0)
            self._remove_files(load)

    # -- the kinds ---------------------------------------------------------

    def _start_net(self, load: Load, out: Path, path: Any, limit: int, ports: _Ports) -> None:
        spec = load.spec
        if path.kind == "none" or path.guest is not None:
            raise ConfigError(f"--stress {spec.text}: net needs a topology latscope builds on this host "
                              f"(not {path.kind})")
        v6 = self.family == "inet6"
        server_addr = _address(path.receiver, v6)
        client_addr = _address(path.sender, v6)
        if server_addr is None:
            raise ConfigError(f"--stress {spec.text}: the receiver's side of {path.kind} has no address for iperf3")
        servers, clients = [], []
        for s in range(spec.streams):
            port = ports.take()
            sv = Proc(f"server {s}", ["iperf3", "-s", "-1", "-B", server_addr, "-p", str(port), "-J",
                                      "--idle-timeout", str(limit)],
                      path.receiver.netns, out / f"net{load.index}-server{s}.json",
                      out / f"net{load.index}-server{s}.stderr", extra={"port": port})
            argv = ["iperf3", "-c", server_addr, "-p", str(port), "-t", str(limit), "-i", "0", "-J",
                    "-b", str(spec.rate), "--connect-timeout", "5000"]
            if client_addr is not None:
                argv += ["-B", client_addr]
            if spec.protocol == "udp":
                argv.append("-u")
            if spec.size is not None:
                argv += ["-l", str(spec.size)]
            cl = Proc(f"client {s}", argv, path.sender.netns, out / f"net{load.index}-client{s}.json",
                      out / f"net{load.index}-client{s}.stderr", extra={"port": port})
            servers.append(sv)
            clients.append(cl)
        for sv in servers:
            load.procs.append(sv)
            sv.launch(out)
        self._wait(load, servers, lambda p: any(lp == p.extra["port"] and st == TCP_LISTEN
                                                for lp, _rp, st in sockets_of(p.pid or 0, "tcp")),
                   "listening")
        for cl in clients:
            load.procs.append(cl)
            cl.launch(out)

        def connected(p: Proc) -> bool:
            port = p.extra["port"]
            if spec.protocol == "udp":
                return any(rp == port for _lp, rp, _st in sockets_of(p.pid or 0, "udp"))
            # The control connection and the data stream.
            return sum(rp == port and st == TCP_ESTABLISHED for _lp, rp, st in sockets_of(p.pid or 0, "tcp")) >= 2

        self._wait(load, clients, connected, "connected")
        load.ready_at = now_iso()

    def _start_io(self, load: Load, out: Path, limit: int) -> None:
        spec = load.spec
        directory = spec.dir if spec.dir is not None else self.default_dir()
        if directory is None:
            raise ConfigError(f"--stress {spec.text}: io needs dir=PATH or --log-fs")
        target = Path(os.path.abspath(directory)) / f"latscope-{os.getpid()}-io{load.index}.dat"
        load.files.append(target)
        # fio splits --filename at ':' (several files): escaped, dir=/x/v:w cannot make it write /x/v.
        fio_name = str(target).replace(":", "\\:")
        argv = ["fio", f"--name=latscope-io{load.index}", f"--filename={fio_name}", "--rw=randwrite",
                f"--bs={spec.bs}", f"--size={spec.size}", "--fsync=1", "--ioengine=psync", "--fallocate=none",
                f"--runtime={limit}", "--time_based", "--thread", "--output-format=json",
                f"--output={out / f'io{load.index}-fio.json'}", "--eta=never"]
        if spec.rate is not None:
            argv.append(f"--rate={spec.rate}")
        p = Proc("fio", argv, None, out / f"io{load.index}-fio.stdout", out / f"io{load.index}-fio.stderr",
                 extra={"file": str(target)})
        load.procs.append(p)
        p.launch(out)
        # Running: fio's job has written its own file (its wchar alone counts its messages too: a fio
        # that could not create the file has written its error by then).
        self._wait(load, [p], lambda q: _wchar(q.pid or 0) > 0 and _has_data(target), "writing")
        load.ready_at = now_iso()

    def _start_stressng(self, load: Load, out: Path, limit: int) -> None:
        spec = load.spec
        argv = ["stress-ng", f"--{spec.kind}", str(spec.workers)]
        if spec.kind == "vm":
            argv += ["--vm-bytes", str(spec.vm_bytes)]
        if spec.cpus is not None:
            argv += ["--taskset", ",".join(str(c) for c in spec.cpus)]
        argv += ["--timeout", f"{limit}s", "--metrics", "--yaml", str(out / f"{spec.kind}{load.index}-stress-ng.yaml")]
        p = Proc("stress-ng", argv, None, out / f"{spec.kind}{load.index}-stress-ng.stdout",
                 out / f"{spec.kind}{load.index}-stress-ng.stderr")
        load.procs.append(p)
        p.launch(out)
        self._wait(load, [p], lambda q: len(children_of(q.pid or 0)) >= spec.workers, "running its workers")
        load.ready_at = now_iso()

    # -- helpers -------------------------------------------------------------

    def _wait(self, load: Load, procs: list[Proc], ready: Callable[[Proc], bool], what: str) -> None:
        """Until every proc is ``ready``; a stop signal cuts it short (the session then stops cleanly)."""
        deadline = time.monotonic() + self.ready_timeout_s
        pending = list(procs)
        while pending:
            stop = StopRequest.current()
            if stop is not None and stop.requested:
                return
            for p in list(pending):
                if ready(p):
                    pending.remove(p)
                elif p.exited():
                    raise CaptureError(f"--stress {load.spec.text}: {load.spec.tool} ({p.role}) ended before "
                                       f"{what}: {p.output_tail()}")
            if pending and time.monotonic() > deadline:
                raise CaptureError(f"--stress {load.spec.text}: {load.spec.tool} ({pending[0].role}) not {what} "
                                   f"after {self.ready_timeout_s:.0f} s")
            if pending:
                time.sleep(0.01)

    def _achieved(self, load: Load) -> dict[str, Any]:
        spec = load.spec
        if spec.kind == "net":
            streams = []
            clients = [p for p in load.procs if p.role.startswith("client")]
            for cl in clients:
                sv = next((p for p in load.procs if p.role == "server" + cl.role[6:]), None)
                st = results.iperf3_stream(_read(cl.stdout), _read(sv.stdout) if sv else None, spec.protocol)
                streams.append({"port": cl.extra["port"], **st})
            return results.iperf3_total(streams, spec.protocol)
        if spec.kind == "io":
            return results.fio_achieved(_read(load.procs[0].stdout.parent / f"io{load.index}-fio.json"))
        return results.stressng_achieved(
            _read(load.procs[0].stdout.parent / f"{spec.kind}{load.index}-stress-ng.yaml"), spec.kind)

    @staticmethod
    def _remove_files(load: Load) -> None:
        for f in load.files:
            try:
                f.unlink(missing_ok=True)
            except OSError:
                pass  # a dir= that is gone or read-only now: nothing of ours to remove there


def _address(side: Any, v6: bool) -> str | None:
    first, second = (side.address6, side.address4) if v6 else (side.address4, side.address6)
    return first or second


def _wchar(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _has_data(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


class _Ports:
    """Ports for the floods: from 5201 up inside latscope's namespaces, free ones on a shared host stack."""

    def __init__(self, path: Any, probe_port: int | None) -> None:
        self.shared = path.receiver.netns is None
        self.next = NET_PORT_BASE
        self.avoid = {probe_port} if probe_port else set()
        self.taken: set[int] = set()

    def take(self) -> int:
        if self.shared:
            for _ in range(100):
                port = _free_port()
                if port and port not in self.avoid and port not in self.taken:
                    self.taken.add(port)
                    return port
            raise CaptureError("no free port for iperf3")
        while self.next in self.avoid:
            self.next += 1
        self.next += 1
        return self.next - 1


def _free_port() -> int:
    """A port free for TCP and UDP on this stack (iperf3 uses both on one number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                return 0
    return port
