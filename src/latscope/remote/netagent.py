"""`latscope agent`: runs measurement halves on this host for an authenticated controller on another.

The same idea as the guest agent (remote.agent), over TCP: a controller
connects, both sides prove the pre-shared key (remote.netauth), and the
controller asks for workers by role and spec. The agent runs them with the
code `latscope run` runs (probe.controller.spawn_doc, probe.worker), relays
their readiness lines and progress, and sends their result files back when
they end; the controller stores the run. On the controller's side the link
is a GuestLink (remote.netlink.AgentLink), so the session treats a half here
as it treats a half in a guest.

What the agent never does: run a command it is sent (there is no such
request), take a path or a namespace from a controller, run workers of two
controllers at once, or let a stream go over the owner's limits
(remote.netlimits). Every refusal is one line in its log; the agent keeps
serving. When the controller goes away (killed, connection lost) its
workers are stopped: a run never outlives the controller that asked for it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latscope.process import pid_alive
from latscope.remote.channel import Channel, ChannelClosed, ChannelError, Frame
from latscope.remote.netauth import (
    MAX_AUTH_HEADER,
    AuthFailed,
    SealedChannel,
    SeenNonces,
    agent_handshake,
)
from latscope.remote.netlimits import Limits, Refused, Usage, check_spec

AUTH_TIMEOUT_S = 5.0
#: Connections still authenticating at once; more are closed at once (a flood of them must not starve us).
MAX_PENDING = 64
#: A controller's request: a spec is a few KiB; nothing a controller sends has a payload.
MAX_REQUEST = 64 * 1024
SCRATCH_PREFIX = "latscope-agent-"
_SCRATCH = re.compile(rf"^{SCRATCH_PREFIX}(\d+)-")
_WID = re.compile(r"^[a-z]{1,16}-[0-9]{1,9}$")
SIGNALS = {int(signal.SIGUSR1), int(signal.SIGTERM), int(signal.SIGINT), int(signal.SIGKILL)}
STOP_GRACE_S = 5.0

Log = Callable[[str], None]


def reap_stale(root: Path) -> list[Path]:
    """Remove the scratch directories of agents that no longer run (their names carry the pid)."""
    gone: list[Path] = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return gone
    for p in entries:
        m = _SCRATCH.match(p.name)
        if m and not pid_alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
    return gone


def scratch_root() -> Path:
    """Memory when there is some (the workers write their results there), else the temporary directory."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def egress_interface(address: str) -> str | None:
    """The interface the route to ``address`` leaves by in this network namespace, None without a route."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        try:
            routes = ipr.route("get", dst=address)
        except NetlinkError:
            return None
        if not routes:
            return None
        oif = routes[0].get_attr("RTA_OIF")
        links = ipr.link("get", index=oif) if oif else []
        return links[0].get_attr("IFLA_IFNAME") if links else None


class AgentWorker:
    """A worker process this agent started for a controller, and the files it leaves."""

    def __init__(self, wid: str, role: str, spec: dict[str, Any], workdir: Path) -> None:
        from latscope.probe import controller
        from latscope.probe.worker import open_progress

        self.wid, self.role = wid, role
        self.dir = workdir / wid
        self.dir.mkdir()
        self.stream_log = spec.get("stream_log")
        progress = controller.progress_file(self.dir)
        self.worker = controller.spawn_doc(role, spec, self.dir, progress)
        self.view, self._mm = open_progress(str(progress))
        stdout = self.worker.proc.stdout
        assert stdout is not None
        self.fd = stdout.fileno()
        os.set_blocking(self.fd, False)
        self.out = b""
        self.started = time.monotonic()
        self.watchdog_fired = False

    @property
    def pid(self) -> int:
        return self.worker.proc.pid

    def poll(self) -> int | None:
        return self.worker.proc.poll()

    def read_lines(self) -> list[str]:
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.out = (self.out + chunk)[-65536:]
        lines = []
        while b"\n" in self.out:
            line, self.out = self.out.split(b"\n", 1)
            lines.append(line.decode(errors="replace")[:200])
        return lines

    def progress(self) -> list[int]:
        return list(self.view)

    def files(self) -> list[tuple[str, Path]]:
        out = [(f"{self.role}.npz", self.worker.result), (f"{self.role}.npz.json", Path(f"{self.worker.result}.json")),
               (f"{self.role}.stderr", self.worker.stderr_path)]
        if self.stream_log:
            out.append((f"stream-{self.role}.log", Path(self.stream_log)))
        return out

    def end(self) -> None:
        """Stop the worker if it still runs (SIGTERM keeps what it measured, then SIGKILL)."""
        if self.poll() is None:
            self.worker.signal(signal.SIGTERM)
            if not self.worker.wait(STOP_GRACE_S):
                self.worker.kill()

    def close(self) -> None:
        self.view.release()
        self._mm.close()
        if self.worker.proc.stdout is not None:
            self.worker.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Session:
    """One controller's connection: authentication, then its requests, until it goes away."""

    def __init__(self, server: AgentServer, sock: socket.socket, peer: str) -> None:
        self.server, self.sock, self.peer = server, sock, peer
        self.workers: dict[str, AgentWorker] = {}
        self.usage = Usage()
        self.chan: Channel | None = None
        self.ids = 0

    def log(self, text: str) -> None:
        self.server.log(f"{self.peer}: {text}")

    def run(self) -> None:
        try:
            try:
                chan = self._authenticate()
            finally:
                self.server.unpending()
            if chan is None:
                return
            self.chan = chan
            self.log("authenticated")
            self._serve(chan)
        finally:
            self._end_workers()
            self.server.release(self)
            try:
                self.sock.close()
            except OSError:
                pass
            self.server.forget(self)

    def _authenticate(self) -> SealedChannel | None:
        chan = Channel(self.sock.fileno(), max_header=MAX_AUTH_HEADER, max_payload=0)
        try:
            key = agent_handshake(chan, self.server.key, self.server.seen, AUTH_TIMEOUT_S)
        except AuthFailed as exc:
            self.log(f"refused: {exc}")
            self._tell({"ok": False, "error": "authentication failed"}, chan)
            return None
        except ChannelError as exc:
            self.log(f"refused: not the protocol before authentication ({exc})")
            return None
        except (ChannelClosed, OSError) as exc:
            self.log(f"refused: the connection ended before authentication ({exc or type(exc).__name__})")
            return None
        return SealedChannel(self.sock.fileno(), key, role="agent", buf=bytes(chan.buf),
                             max_header=MAX_REQUEST, max_payload=0)

    @staticmethod
    def _tell(header: dict[str, Any], chan: Channel) -> None:
        try:
            chan.send(header)
        except (ChannelClosed, OSError):
            pass

    def _serve(self, chan: SealedChannel) -> None:
        while not self.server.stopping.is_set():
            try:
                frame = chan.recv(0.25 if self.workers else 1.0)
            except ChannelError as exc:
                self.log(f"dropped: {exc}")
                return
            except (ChannelClosed, OSError) as exc:
                self.log(f"the controller went away ({exc or type(exc).__name__})" +
                         (f"; stopping {len(self.workers)} workers" if self.workers else ""))
                return
            try:
                if frame is not None and not self.handle(frame):
                    return
                self.poll_workers()
            except (ChannelClosed, OSError) as exc:
                self.log(f"the controller went away ({exc or type(exc).__name__})")
                return
        if self.workers:
            self.log(f"the agent is stopping: stopping {len(self.workers)} workers")

    def reply(self, rid: Any, ok: bool = True, **fields: Any) -> None:
        assert self.chan is not None
        self.chan.send({"re": rid, "ok": ok, **fields})

    def handle(self, frame: Frame) -> bool:
        """Serve one request; False when the controller said goodbye."""
        h = frame.header
        op, rid = h.get("op"), h.get("id")
        if not isinstance(rid, int) or isinstance(rid, bool):
            self.log(f"refused a request without an id (op {str(op)[:40]!r})")
            return True
        try:
            if op == "hello":
                self.reply(rid, **self.server.describe())
            elif op == "time":
                # t2: when the request was read; t3: just before the answer is written (remote.clock).
                self.reply(rid, t2=frame.rx_ns, t3=time.clock_gettime_ns(time.CLOCK_REALTIME))
            elif op == "clock":
                # This host's synchronisation (adjtimex, chrony, ptp4l): read-only checks, bounded in time.
                from latscope.env.clock import check_host

                self.reply(rid, clock=check_host())
            elif op == "environment":
                from latscope.env import collect_environment

                self.reply(rid, environment=collect_environment())
            elif op == "spawn":
                worker = self.spawn(h)
                self.log(f"started {worker.wid} (pid {worker.pid})")
                self.reply(rid, pid=worker.pid)
            elif op == "signal":
                self.signal(h)
                self.reply(rid)
            elif op == "bye":
                self.reply(rid)
                return False
            else:
                raise Refused(f"unknown request {str(op)[:40]!r}")
        except Refused as exc:
            self.log(f"refused {str(op)[:40]}: {exc}")
            self.reply(rid, ok=False, error=str(exc))
        return True

    def spawn(self, h: dict[str, Any]) -> AgentWorker:
        from latscope.probe.spec import ROLES

        role, wid = h.get("role"), h.get("wid")
        if role not in ROLES:
            raise Refused(f"unknown role {str(role)[:40]!r} (this agent runs {', '.join(ROLES)})")
        if not isinstance(wid, str) or not _WID.match(wid) or wid in self.workers:
            raise Refused(f"bad worker id {str(wid)[:40]!r}")
        if len(self.workers) >= self.server.limits.max_workers:
            raise Refused(f"already {len(self.workers)} workers running for this controller")
        self.server.acquire(self)
        try:
            spec = check_spec(wid, h.get("spec"), self.server.limits, self.usage,
                              scratch_log=str(self.server.scratch / f"{wid}-stream.log"),
                              key_file=self.server.key_file, egress=egress_interface)
            spec = own_hello(spec)
            parse_known(role, spec)
            try:
                worker = AgentWorker(wid, role, spec, self.server.scratch)
            except OSError as exc:
                raise Refused(f"cannot start the {role}: {exc.strerror or exc}") from None
        except BaseException:
            self.usage.rates.pop(wid, None)
            if not self.workers:
                self.server.release(self)
            raise
        self.workers[wid] = worker
        return worker

    def signal(self, h: dict[str, Any]) -> None:
        w = self.workers.get(str(h.get("wid")))
        sig = h.get("sig")
        if sig not in SIGNALS:
            raise Refused(f"signal {str(sig)[:20]!r}: the agent passes on only SIGUSR1, SIGTERM, SIGINT and SIGKILL")
        if w is not None and w.poll() is None:
            w.worker.signal(int(sig))

    def poll_workers(self) -> None:
        """Relay readiness lines and progress; send the results of workers that ended; watch the time."""
        assert self.chan is not None
        for w in list(self.workers.values()):
            code = w.poll()
            for line in w.read_lines():
                self.chan.send({"ev": "line", "wid": w.wid, "line": line})
            self.chan.send({"ev": "progress", "wid": w.wid, "values": w.progress()})
            if code is None:
                if not w.watchdog_fired and time.monotonic() - w.started > self.server.limits.watchdog_s():
                    w.watchdog_fired = True
                    self.log(f"stopping {w.wid}: it ran past --max-duration")
                    w.worker.signal(signal.SIGUSR1)
                elif w.watchdog_fired and time.monotonic() - w.started > self.server.limits.watchdog_s() + 30:
                    w.worker.kill()
                continue
            for name, path in w.files():
                try:
                    data = path.read_bytes()
                except OSError:
                    continue
                self.chan.send({"ev": "file", "wid": w.wid, "name": name}, data)
            self.chan.send({"ev": "exit", "wid": w.wid, "code": code})
            self.log(f"{w.wid} ended (status {code})")
            self._drop(w)

    def _drop(self, w: AgentWorker) -> None:
        w.close()
        self.workers.pop(w.wid, None)
        self.usage.rates.pop(w.wid, None)
        if w.stream_log:
            Path(w.stream_log).unlink(missing_ok=True)
        if not self.workers:
            self.server.release(self)

    def _end_workers(self) -> None:
        for w in list(self.workers.values()):
            w.end()
            self.log(f"stopped {w.wid} (status {w.poll()}); its results are dropped")
            self._drop(w)


def own_hello(spec: dict[str, Any]) -> dict[str, Any]:
    """A sender's hello names the host it runs on: this one, not the controller's."""
    hello = spec.get("hello")
    if isinstance(hello, dict):
        u = os.uname()
        spec = {**spec, "hello": {**hello, "host": u.nodename, "kernel": u.release}}
    return spec


def parse_known(role: str, spec: dict[str, Any]) -> None:
    """Refuse a spec the probe cannot parse for ``role`` (the worker would only fail later)."""
    from latscope.probe.spec import spec_from_json

    try:
        spec_from_json(role, spec)
    except (TypeError, KeyError, ValueError) as exc:
        raise Refused(f"malformed {role} spec: {str(exc)[:120]}") from None


class AgentServer:
    """The listening socket and its sessions."""

    def __init__(self, listen: tuple[str, int], key: bytes, key_file: str, limits: Limits, log: Log) -> None:
        self.key, self.key_file, self.limits, self.log = key, key_file, limits, log
        self.seen = SeenNonces()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.pending = 0
        self.sessions: set[Session] = set()
        self.owner: Session | None = None
        root = scratch_root()
        for p in reap_stale(root):
            log(f"removed {p}, left by an agent that was killed")
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=root))
        host, port = listen
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.sock.listen(1024)
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            shutil.rmtree(self.scratch, ignore_errors=True)
            raise
        self.address = self.sock.getsockname()[:2]

    def describe(self) -> dict[str, Any]:
        from latscope import __version__

        u = os.uname()
        with self.lock:
            busy = self.owner.peer if self.owner is not None else None
        return {"agent": "latscope", "version": __version__, "host": u.nodename, "kernel": u.release,
                "python": sys.version.split()[0], "pid": os.getpid(), "limits": self.limits.to_json(), "busy": busy}

    def acquire(self, session: Session) -> None:
        """One measurement at a time: the session that starts a worker owns the agent until its workers end."""
        with self.lock:
            if self.owner is not None and self.owner is not session:
                raise Refused(f"busy: a measurement for {self.owner.peer} is running")
            self.owner = session

    def release(self, session: Session) -> None:
        with self.lock:
            if self.owner is session:
                self.owner = None

    def unpending(self) -> None:
        with self.lock:
            self.pending -= 1

    def forget(self, session: Session) -> None:
        with self.lock:
            self.sessions.discard(session)

    def serve(self) -> None:
        """Accept connections until ``stop()``; then end every session (and its workers)."""
        import select

        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        try:
            while not self.stopping.is_set():
                if not poller.poll(250):
                    continue
                for conn, addr in self._accept_all():
                    self._admit(conn, addr)
        finally:
            self.stopping.set()
            self.sock.close()
            deadline = time.monotonic() + AUTH_TIMEOUT_S + 2 * STOP_GRACE_S
            while time.monotonic() < deadline:
                with self.lock:
                    if not self.sessions:
                        break
                time.sleep(0.05)
            shutil.rmtree(self.scratch, ignore_errors=True)

    def _admit(self, conn: socket.socket, addr: Any) -> None:
        """A session for a new connection, unless too many are still authenticating."""
        peer = _peer(addr)
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        with self.lock:
            full = self.pending >= MAX_PENDING
            if not full:
                self.pending += 1
        if full:
            self.log(f"{peer}: refused: {MAX_PENDING} connections are already authenticating")
            conn.close()
            return
        session = Session(self, conn, peer)
        with self.lock:
            self.sessions.add(session)
        threading.Thread(target=session.run, name=f"latscope-agent-{peer}", daemon=True).start()

    def _accept_all(self) -> list[tuple[socket.socket, Any]]:
        """Every connection waiting (a burst of them must not overflow the listen queue), at most 256."""
        out: list[tuple[socket.socket, Any]] = []
        while len(out) < 256:
            try:
                conn, addr = self.sock.accept()
            except OSError:  # none left (EAGAIN), or one that went away before we took it
                break
            conn.setblocking(True)
            out.append((conn, addr))
        return out

    def stop(self) -> None:
        self.stopping.set()


def _peer(addr: Any) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
