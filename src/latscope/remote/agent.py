"""The guest side of a VM run: ``python -m latscope.remote.agent``, PID 1 of the guest after /init.

It prepares the guest (mounts, network), then serves the host's requests on
the virtio-serial port ``org.latscope.ctl``: clock exchanges, running the
same sender and receiver code `latscope run` runs on the host
(latscope.probe.worker.run_role, in a fork of the agent), relaying their
readiness and progress, sending their result files back when they end, the
guest's environment, and power-off. It imports only the standard library
until the host's clock set-up is done; then ("warm") a thread imports the
probe, so that each worker is a fork that is listening at once: under an
emulated CPU those imports cost many seconds.
"""

from __future__ import annotations

import ctypes
import importlib
import mmap
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from latscope.libc import LIBC, Timex
from latscope.remote.channel import Channel, ChannelClosed, Frame

PORT_NAME = "org.latscope.ctl"
CWD = Path("/latscope")
#: The workers' progress counters (shared mmaps: a tmpfs, never the 9p root). Not under /tmp: a
#: checkout or venv under the host's /tmp (a CI clone) must stay visible in the guest.
SCRATCH = Path("/run/latscope")
PROGRESS_SLOTS = 4
RB_POWER_OFF = 0x4321FEDC


def find_port(sys_root: Path = Path("/sys/class/virtio-ports"), wait_s: float = 30.0) -> Path:
    """/dev/vportNpM of the port QEMU named ``org.latscope.ctl`` (udev is not running: look in sysfs)."""
    deadline = time.monotonic() + wait_s
    while True:
        if sys_root.is_dir():
            for d in sorted(sys_root.iterdir()):
                try:
                    if (d / "name").read_text().strip() == PORT_NAME:
                        return Path("/dev") / d.name
                except OSError:
                    continue
        if time.monotonic() > deadline:
            raise RuntimeError(f"no virtio-serial port named {PORT_NAME}")
        time.sleep(0.05)


def _run(*argv: str) -> str:
    """A system command the guest setup needs; its error text when it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def prepare_system() -> None:
    """What an init would do: scratch space, tracefs (the root: the host's under a tmpfs overlay, or the initramfs)."""
    for path, fstype in (("/run", "tmpfs"), ("/sys/kernel/tracing", "tracefs")):
        try:
            os.makedirs(path, exist_ok=True)
            _run("mount", "-t", fstype, fstype, path)
        except (OSError, RuntimeError):
            pass
    SCRATCH.mkdir(parents=True, exist_ok=True)
    try:
        Path("/proc/sys/kernel/hostname").write_text("latscope-guest")
    except OSError:
        pass


def mounts() -> list[str]:
    """The guest's mounts as "device mountpoint type" (what its root is, for run.json)."""
    return [" ".join(ln.split()[:3]) for ln in Path("/proc/mounts").read_text().splitlines()]


def setup_network(req: dict[str, Any]) -> dict[str, Any]:
    """Bring up the interface with the MAC the host gave QEMU, with the addresses the host chose."""
    mac = str(req["mac"]).lower()
    ifname = None
    for d in Path("/sys/class/net").iterdir():
        try:
            if (d / "address").read_text().strip().lower() == mac:
                ifname = d.name
        except OSError:
            continue
    if ifname is None:
        raise RuntimeError(f"no guest interface has MAC {mac}")
    _run("ip", "link", "set", "lo", "up")
    if req.get("address4"):
        _run("ip", "addr", "add", req["address4"], "dev", ifname)
    if req.get("address6"):
        # No duplicate address detection, so the address is usable at once: through the sysctl rather
        # than iproute2's "nodad", which busybox's ip (the initramfs root's) does not know.
        Path(f"/proc/sys/net/ipv6/conf/{ifname}/accept_dad").write_text("0")
        _run("ip", "addr", "add", req["address6"], "dev", ifname)
    _run("ip", "link", "set", ifname, "up")
    return {"ifname": ifname}


def setup_cwd(req: dict[str, Any]) -> dict[str, Any]:
    """The directory the guest workers run in and write their stream logs to (--vm-cwd)."""
    kind = req["kind"]
    CWD.mkdir(parents=True, exist_ok=True)
    if kind == "tmpfs":
        _run("mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(CWD))
    elif kind == "9p":
        _run("mount", "-t", "9p", "-o", "trans=virtio,version=9p2000.L,msize=512000,cache=none", "cwd", str(CWD))
    elif kind in ("ext4", "ext2"):
        _run("mount", "-t", kind, req.get("device", "/dev/vda"), str(CWD))
    else:
        raise RuntimeError(f"unknown cwd kind {kind!r}")
    mounts = [ln for ln in Path("/proc/mounts").read_text().splitlines() if f" {CWD} " in ln]
    return {"path": str(CWD), "mount": mounts[-1] if mounts else ""}


class Warmup:
    """The worker's modules (numpy, latscope.probe), imported in a thread while the host does other things.

    Under TCG these imports take seconds; done once in the agent, every
    worker is then a fork of it and is listening within a fraction of a
    second instead of re-importing everything.
    """

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.error: str | None = None

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="latscope-warmup", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        try:
            importlib.import_module("latscope.probe.worker")
        except Exception as exc:  # noqa: BLE001 - reported when a worker is asked for
            self.error = f"{type(exc).__name__}: {exc}"

    def wait(self) -> None:
        """Block until the imports are done (forking while a thread imports is not safe)."""
        self.start()
        assert self.thread is not None
        self.thread.join()
        if self.error:
            raise RuntimeError(f"cannot load latscope's probe in the guest: {self.error}")


class GuestWorker:
    """A worker in the guest: a fork of the agent running latscope.probe.worker.run_role."""

    def __init__(self, wid: str, role: str, spec: dict[str, Any], chan_fd: int) -> None:
        self.wid, self.role = wid, role
        self.result = CWD / f"{role}.npz"
        self.progress_path = SCRATCH / f"{role}.progress"
        self.progress_path.write_bytes(b"\0" * 8 * PROGRESS_SLOTS)
        self.stderr_path = SCRATCH / f"{role}.stderr"
        if spec.get("stream_log"):
            spec = {**spec, "stream_log": str(CWD / f"stream-{role}.log")}
        self.stream_log = spec.get("stream_log")
        for stale in (self.result, Path(f"{self.result}.json")):
            stale.unlink(missing_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 70
            try:
                os.close(rfd)
                os.close(chan_fd)
                os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
                os.dup2(wfd, 1)
                os.dup2(os.open(self.stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
                os.chdir(CWD)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                from latscope.probe.worker import run_role

                code = run_role(role, spec, self.result, str(self.progress_path))
            except BaseException:  # noqa: BLE001 - the child must never return into the agent
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                os._exit(code)
        os.close(wfd)
        self.pid = pid
        self.out_fd = rfd
        os.set_blocking(rfd, False)
        self.code: int | None = None
        fd = os.open(self.progress_path, os.O_RDONLY)
        try:
            self.mm = mmap.mmap(fd, 8 * PROGRESS_SLOTS, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self.view = memoryview(self.mm).cast("q")
        self.out = b""

    def poll(self) -> int | None:
        if self.code is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(status)
        return self.code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def read_lines(self) -> list[str]:
        lines = []
        while True:
            try:
                chunk = os.read(self.out_fd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.out += chunk
        while b"\n" in self.out:
            line, self.out = self.out.split(b"\n", 1)
            lines.append(line.decode(errors="replace"))
        return lines

    def progress(self) -> list[int]:
        return list(self.view)

    def files(self) -> list[tuple[str, Path]]:
        out = [(f"{self.role}.npz", self.result), (f"{self.role}.npz.json", Path(f"{self.result}.json")),
               (f"{self.role}.stderr", self.stderr_path)]
        if self.stream_log:
            out.append((f"stream-{self.role}.log", Path(self.stream_log)))
        return out

    def close(self) -> None:
        self.view.release()
        self.mm.close()
        os.close(self.out_fd)


class Agent:
    """The request loop."""

    def __init__(self, chan: Channel) -> None:
        self.chan = chan
        self.workers: dict[str, GuestWorker] = {}
        self.warm = Warmup()
        self.tracer: Any = None   # latscope.remote.guesttrace.GuestTracer, made on the first trace request
        self.load: subprocess.Popen | None = None

    def reply(self, req: Frame, **fields: Any) -> None:
        self.chan.send({"re": req.header.get("id"), "ok": True, **fields})

    def handle(self, req: Frame) -> bool:
        """Serve one request; False when the guest should power off."""
        op = req.header.get("op")
        try:
            if op == "hello":
                u = os.uname()
                self.reply(req, kernel=u.release, nodename=u.nodename, python=sys.version.split()[0],
                           pid=os.getpid(), uptime_s=float(Path("/proc/uptime").read_text().split()[0]),
                           mounts=mounts())
            elif op == "time":
                # t2: when the request was read; t3: just before the answer is written.
                self.chan.send({"re": req.header.get("id"), "ok": True, "t2": req.rx_ns,
                                "t3": time.clock_gettime_ns(time.CLOCK_REALTIME)})
            elif op == "step":
                self.reply(req, method=step_clock(int(req.header["delta_ns"])))
            elif op == "net":
                self.reply(req, **setup_network(req.header))
            elif op == "cwd":
                self.reply(req, **setup_cwd(req.header))
            elif op == "warm":
                self.warm.start()
                self.reply(req)
            elif op == "spawn":
                self.warm.wait()
                w = GuestWorker(str(req.header["wid"]), str(req.header["role"]), dict(req.header["spec"]),
                                self.chan.fd)
                self.workers[w.wid] = w
                self.reply(req, pid=w.pid)
            elif op == "signal":
                target = self.workers.get(str(req.header["wid"]))
                if target is not None:
                    target.send_signal(int(req.header["sig"]))
                self.reply(req)
            elif op == "environment":
                from latscope.env import collect_environment

                self.reply(req, environment=collect_environment())
            elif op == "exec":
                self.reply(req, **run_tool(req.header))
            elif op in ("trace_start", "trace_stop", "trace_read", "trace_remove"):
                from latscope.remote.guesttrace import GuestTracer

                self.tracer = self.tracer or GuestTracer()
                fields, payload = self.tracer.handle(op, req.header)
                self.chan.send({"re": req.header.get("id"), "ok": True, **fields}, payload)
            elif op in ("load_start", "load_stop"):
                self.reply(req, **self.disk_load(op, req.header))
            elif op == "poweroff":
                self.reply(req)
                return False
            else:
                self.chan.send({"re": req.header.get("id"), "ok": False, "error": f"unknown request {op!r}"})
        except Exception as exc:  # noqa: BLE001 - any failure goes back to the host as the answer
            self.chan.send({"re": req.header.get("id"), "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return True

    def disk_load(self, op: str, req: dict[str, Any]) -> dict[str, Any]:
        """Start or end the bounded disk writer (latscope.remote.guestload) in the working directory."""
        if self.load is not None and self.load.poll() is None:
            self.load.terminate()
            try:
                self.load.wait(30)
            except subprocess.TimeoutExpired:
                self.load.kill()
                self.load.wait()
        ended = None if self.load is None else self.load.returncode
        self.load = None
        out = SCRATCH / "load.out"
        if op == "load_stop":
            try:
                said = out.read_text().split()
            except OSError:
                said = []
            return {"code": ended, "written": int(said[1]) if len(said) == 2 and said[1].isdigit() else None}
        argv = [sys.executable, "-m", "latscope.remote.guestload", str(CWD), str(int(req.get("max_bytes", 1 << 28))),
                str(float(req.get("max_s", 60))), str(int(req.get("block", 1 << 16))), str(int(req.get("sync_every", 16))),
                str(int(req.get("rate", 0)))]
        with open(out, "w") as fh:
            self.load = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.DEVNULL, cwd=CWD)
        return {"pid": self.load.pid}

    def poll_workers(self) -> None:
        """Relay readiness lines, progress, and the results of workers that ended."""
        for w in list(self.workers.values()):
            code = w.poll()
            for line in w.read_lines():
                self.chan.send({"ev": "line", "wid": w.wid, "line": line})
            self.chan.send({"ev": "progress", "wid": w.wid, "values": w.progress()})
            if code is not None:
                for name, path in w.files():
                    try:
                        data = path.read_bytes()
                    except OSError:
                        continue
                    self.chan.send({"ev": "file", "wid": w.wid, "name": name}, data or b"")
                self.chan.send({"ev": "exit", "wid": w.wid, "code": code})
                w.close()
                del self.workers[w.wid]

    def serve(self) -> None:
        while True:
            timeout = 0.25 if self.workers else None
            frame = self.chan.recv(timeout)
            if frame is not None and not self.handle(frame):
                return
            if self.workers:
                self.poll_workers()


def run_tool(req: dict[str, Any]) -> dict[str, Any]:
    """A bounded measurement tool in the guest (cyclictest for benchmarks), never a shell."""
    allowed = {"cyclictest", "sync"}
    argv = [str(a) for a in req.get("argv", [])]
    if not argv or argv[0] not in allowed:
        raise RuntimeError(f"the agent runs only {sorted(allowed)}")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=float(req.get("timeout_s", 120)),
                          check=False)
    return {"code": proc.returncode, "stdout": proc.stdout[-200_000:], "stderr": proc.stderr[-4000:]}


ADJ_SETOFFSET, ADJ_NANO = 0x0100, 0x2000


def step_clock(delta_ns: int) -> str:
    """Add ``delta_ns`` to CLOCK_REALTIME inside the kernel (ADJ_SETOFFSET).

    Reading the clock and setting it from Python loses the time between the
    two calls: under an emulated CPU that was a steady ~0.6 ms.
    """
    tx = Timex()
    tx.modes = ADJ_SETOFFSET | ADJ_NANO
    sec, nsec = divmod(delta_ns, 1_000_000_000)
    tx.time.tv_sec, tx.time.tv_usec = sec, nsec
    if LIBC.clock_adjtime(time.CLOCK_REALTIME, ctypes.byref(tx)) >= 0:
        return "adjtime"
    now = time.clock_gettime_ns(time.CLOCK_REALTIME)
    time.clock_settime_ns(time.CLOCK_REALTIME, now + delta_ns)
    return "settime"


def poweroff() -> None:
    os.sync()
    LIBC.reboot(RB_POWER_OFF)


def main() -> int:
    prepare_system()
    # PID 1 ignores these unless it handles them; a stray signal must not end the guest mid-run.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    port = find_port()
    fd = os.open(port, os.O_RDWR | os.O_CLOEXEC)
    chan = Channel(fd)
    try:
        chan.send({"ev": "boot", "uptime_s": float(Path("/proc/uptime").read_text().split()[0])})
        Agent(chan).serve()
    except ChannelClosed:
        pass
    finally:
        if os.getpid() == 1:
            poweroff()
    return 0


if __name__ == "__main__":
    sys.exit(main())
