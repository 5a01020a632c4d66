"""The guest side of a VM run: ``python -m latscope.remote.agent``, PID 1 of the guest after /init.

It prepares the guest (mounts, network), then serves the host's requests on
the virtio-serial port ``org.latscope.ctl``: clock exchanges, starting the
same sender and receiver workers `latscope run` starts on the host, relaying
their readiness and progress, sending their result files back when they end,
the guest's environment, and power-off. It imports only the standard
library until the host asks for the environment: under an emulated CPU every
imported module costs real seconds before the first packet.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from latscope.remote.channel import Channel, ChannelClosed, Frame

PORT_NAME = "org.latscope.ctl"
CWD = Path("/latscope")
SCRATCH = Path("/tmp/latscope")
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
    """What an init would do: scratch space and tracefs (the root is the host's under a tmpfs overlay, or the initramfs)."""
    for path, fstype in (("/tmp", "tmpfs"), ("/run", "tmpfs"), ("/sys/kernel/tracing", "tracefs")):
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


class GuestWorker:
    """A worker process in the guest and what the host has been told about it."""

    def __init__(self, wid: str, role: str, spec: dict[str, Any]) -> None:
        self.wid, self.role = wid, role
        self.result = CWD / f"{role}.npz"
        self.progress_path = SCRATCH / f"{role}.progress"
        self.progress_path.write_bytes(b"\0" * 8 * PROGRESS_SLOTS)
        self.stderr_path = SCRATCH / f"{role}.stderr"
        if spec.get("stream_log"):
            spec = {**spec, "stream_log": str(CWD / f"stream-{role}.log")}
        self.stream_log = spec.get("stream_log")
        spec_path = SCRATCH / f"{role}-spec.json"
        spec_path.write_text(json.dumps(spec))
        for stale in (self.result, Path(f"{self.result}.json")):
            stale.unlink(missing_ok=True)
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "latscope.probe.worker", role, str(spec_path), str(self.result),
                 str(self.progress_path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, cwd=CWD)
        fd = os.open(self.progress_path, os.O_RDONLY)
        try:
            self.mm = mmap.mmap(fd, 8 * PROGRESS_SLOTS, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self.view = memoryview(self.mm).cast("q")
        self.out = b""

    def progress(self) -> list[int]:
        return list(self.view)

    def files(self) -> list[tuple[str, Path]]:
        out = [(f"{self.role}.npz", self.result), (f"{self.role}.npz.json", Path(f"{self.result}.json")),
               (f"{self.role}.stderr", self.stderr_path)]
        if self.stream_log:
            out.append((f"stream-{self.role}.log", Path(self.stream_log)))
        return out


class Agent:
    """The request loop."""

    def __init__(self, chan: Channel) -> None:
        self.chan = chan
        self.workers: dict[str, GuestWorker] = {}

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
            elif op == "spawn":
                w = GuestWorker(str(req.header["wid"]), str(req.header["role"]), dict(req.header["spec"]))
                self.workers[w.wid] = w
                self.reply(req, pid=w.proc.pid)
            elif op == "signal":
                w = self.workers.get(str(req.header["wid"]))
                if w is not None and w.proc.poll() is None:
                    w.proc.send_signal(int(req.header["sig"]))
                self.reply(req)
            elif op == "environment":
                from latscope.env import collect_environment

                self.reply(req, environment=collect_environment())
            elif op == "exec":
                self.reply(req, **run_tool(req.header))
            elif op == "poweroff":
                self.reply(req)
                return False
            else:
                self.chan.send({"re": req.header.get("id"), "ok": False, "error": f"unknown request {op!r}"})
        except Exception as exc:  # noqa: BLE001 - any failure goes back to the host as the answer
            self.chan.send({"re": req.header.get("id"), "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return True

    def poll_workers(self) -> None:
        """Relay readiness lines, progress, and the results of workers that ended."""
        for w in list(self.workers.values()):
            if w.proc.stdout is not None:
                import select as _select

                while _select.select([w.proc.stdout], [], [], 0)[0]:
                    chunk = os.read(w.proc.stdout.fileno(), 4096)
                    if not chunk:
                        break
                    w.out += chunk
                    while b"\n" in w.out:
                        line, w.out = w.out.split(b"\n", 1)
                        self.chan.send({"ev": "line", "wid": w.wid, "line": line.decode(errors="replace")})
            code = w.proc.poll()
            self.chan.send({"ev": "progress", "wid": w.wid, "values": w.progress()})
            if code is not None:
                for name, path in w.files():
                    try:
                        data = path.read_bytes()
                    except OSError:
                        continue
                    self.chan.send({"ev": "file", "wid": w.wid, "name": name}, data or b"")
                self.chan.send({"ev": "exit", "wid": w.wid, "code": code})
                w.view.release()
                w.mm.close()
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


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    _fields_ = ([("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                 ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                 ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                 ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
                 ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
                 ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long),
                 ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int)] + [(f"_pad{i}", ctypes.c_int) for i in range(11)])


ADJ_SETOFFSET, ADJ_NANO = 0x0100, 0x2000


def step_clock(delta_ns: int) -> str:
    """Add ``delta_ns`` to CLOCK_REALTIME inside the kernel (ADJ_SETOFFSET).

    Reading the clock and setting it from Python loses the time between the
    two calls: under an emulated CPU that was a steady ~0.6 ms.
    """
    tx = _Timex()
    tx.modes = ADJ_SETOFFSET | ADJ_NANO
    sec, nsec = divmod(delta_ns, 1_000_000_000)
    tx.time.tv_sec, tx.time.tv_usec = sec, nsec
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.clock_adjtime(time.CLOCK_REALTIME, ctypes.byref(tx)) >= 0:
        return "adjtime"
    now = time.clock_gettime_ns(time.CLOCK_REALTIME)
    time.clock_settime_ns(time.CLOCK_REALTIME, now + delta_ns)
    return "settime"


def poweroff() -> None:
    os.sync()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot(RB_POWER_OFF)


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
