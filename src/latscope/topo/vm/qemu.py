"""Starting QEMU for a guest, naming its threads, and ending it whatever happens.

QEMU runs in the root namespace with the guest's network device handed over
as a file descriptor, with ``debug-threads=on`` so that a host trace names
its threads: the main loop (``qemu-system-x86``, it reads and writes the tap),
each vCPU (``CPU 0/TCG`` or ``CPU 0/KVM``), IO threads (``IO io0``) and the
thread pool (``worker``, 9p and aio=threads block I/O). It dies with its
controller (PR_SET_PDEATHSIG), and every path out of ``running_qemu`` kills it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from latscope.errors import ConfigError, TopologyError
from latscope.libc import LIBC

QEMU = "qemu-system-x86_64"
PR_SET_PDEATHSIG = 1
ACCELS = ("auto", "kvm", "tcg")
APPEND = "console=ttyS0 panic=-1 quiet loglevel=4 mitigations=off 8250.nr_uarts=1"


@dataclass(frozen=True)
class QemuSpec:
    """Everything QEMU is started with."""

    name: str
    kernel: Path
    initrd: Path
    accel: str                  # kvm | tcg (resolved)
    cpus: int = 1
    mem_mb: int = 1024
    tap_fd: int = -1
    guest_mac: str = ""
    control: Path = Path()
    console: Path = Path()
    agent_argv: tuple[str, ...] = ()
    iothread: bool = False
    disk: Path | None = None
    cwd_share: Path | None = None
    vhost: bool = False
    extra_append: str = ""
    #: Share the host's root over 9p (--vm-root 9p); an initramfs root needs nothing from the host.
    root_share: bool = True


@dataclass
class Qemu:
    """A running QEMU process and where it talks."""

    spec: QemuSpec
    proc: subprocess.Popen
    argv: list[str]
    started_ns: int = field(default_factory=time.monotonic_ns)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_status(self, timeout_s: float = 2.0) -> int | None:
        """QEMU's exit status, once it has exited (it may still be flushing when the channel closes)."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def threads(self) -> dict[int, str]:
        """{tid: name} of QEMU's threads now."""
        return thread_map(self.proc.pid)

    def console_tail(self, lines: int = 12) -> str:
        return console_tail(self.spec.console, lines)


def qemu_binary() -> str:
    for d in os.environ.get("PATH", "/usr/bin").split(":") + ["/usr/bin"]:
        p = os.path.join(d, QEMU)
        if os.access(p, os.X_OK):
            return p
    raise ConfigError(f"{QEMU} is missing: install Debian's qemu-system-x86")


def qemu_version(binary: str | None = None) -> str:
    try:
        out = subprocess.run([binary or qemu_binary(), "--version"], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else out.strip()


def vhost_available() -> bool:
    return os.path.exists("/dev/vhost-net")


def command_line(spec: QemuSpec, binary: str) -> list[str]:
    """QEMU's argv for ``spec``."""
    if any(c in a for a in spec.agent_argv for c in " ,\t\n"):
        raise ConfigError(f"the guest command {' '.join(spec.agent_argv)!r} contains spaces or commas; "
                          "install latscope in a path without them")
    accel = ["-accel", "kvm", "-cpu", "host"] if spec.accel == "kvm" else \
        ["-accel", "tcg,thread=multi", "-cpu", "max"]  # qemu64 lacks what numpy needs: Illegal instruction
    append = f"{APPEND} latscope.exec={','.join(spec.agent_argv)} {spec.extra_append}".strip()
    argv = [
        binary, "-name", f"guest={spec.name},debug-threads=on", *accel,
        "-m", str(spec.mem_mb), "-smp", str(spec.cpus),
        "-nodefaults", "-nographic", "-no-reboot", "-no-user-config",
        "-chardev", f"file,id=con,path={spec.console}", "-serial", "chardev:con",
        "-kernel", str(spec.kernel), "-initrd", str(spec.initrd), "-append", append,
        *(["-fsdev", "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap",
           "-device", "virtio-9p-pci,fsdev=root,mount_tag=hostroot"] if spec.root_share else []),
        "-chardev", f"socket,id=ctl,path={spec.control},server=on,wait=off",
        "-device", "virtio-serial-pci", "-device", "virtserialport,chardev=ctl,name=org.latscope.ctl",
    ]
    if spec.tap_fd >= 0:
        argv += ["-netdev", f"tap,id=n0,fd={spec.tap_fd}" + (",vhost=on" if spec.vhost else ""),
                 "-device", f"virtio-net-pci,netdev=n0,mac={spec.guest_mac}"]
    if spec.iothread:
        argv += ["-object", "iothread,id=io0"]
    if spec.disk is not None:
        argv += ["-drive", f"file={spec.disk},if=none,id=d0,format=raw,aio=threads",
                 "-device", "virtio-blk-pci,drive=d0" + (",iothread=io0" if spec.iothread else "")]
    if spec.cwd_share is not None:
        argv += ["-fsdev", f"local,id=cwd,path={spec.cwd_share},security_model=none,multidevs=remap",
                 "-device", "virtio-9p-pci,fsdev=cwd,mount_tag=cwd"]
    return argv


def _child_setup() -> None:
    # Die with the controller, even when it is SIGKILLed and cannot clean up.
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@contextlib.contextmanager
def running_qemu(spec: QemuSpec) -> Iterator[Qemu]:
    """Start QEMU for ``spec``; kill it (and remove its socket) when the block ends."""
    binary = qemu_binary()
    argv = command_line(spec, binary)
    with open(spec.console, "wb"):
        pass
    # Open for QEMU's whole life (it writes there until it is killed below), closed in the finally path.
    log = open(spec.console.with_suffix(".qemu.log"), "wb")  # noqa: SIM115
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                # One prctl and sched_setaffinity between fork and exec, no Python objects.
                                pass_fds=(spec.tap_fd,) if spec.tap_fd >= 0 else (),
                                preexec_fn=_child_setup,  # noqa: PLW1509
                                start_new_session=True)
    except OSError as exc:
        log.close()
        raise TopologyError(f"cannot start {binary}: {exc.strerror}") from None
    qemu = Qemu(spec, proc, argv)
    try:
        yield qemu
    finally:
        log.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(FileNotFoundError):
            spec.control.unlink()


def connect_control(qemu: Qemu, timeout_s: float = 20.0) -> socket.socket:
    """Connect to QEMU's control socket (the guest end is the virtio-serial port)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if not qemu.alive():
            raise TopologyError(f"QEMU exited with status {qemu.proc.returncode} at start: {qemu_log_tail(qemu)}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(str(qemu.spec.control))
            return sock
        except OSError as exc:
            sock.close()
            last = exc.strerror or str(exc)
            time.sleep(0.05)
    raise TopologyError(f"QEMU's control socket did not open within {timeout_s:.0f} s ({last})")


def qemu_log_tail(qemu: Qemu) -> str:
    path = qemu.spec.console.with_suffix(".qemu.log")
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-3:])


def console_tail(path: Path, lines: int = 12) -> str:
    """The last lines of the guest console, and the panic line if it scrolled out of them."""
    try:
        text = path.read_bytes()[-65536:].decode(errors="replace")
    except OSError:
        return ""
    keep = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    tail = keep[-lines:]
    panics = [ln for ln in keep[:-lines] if "Kernel panic" in ln or "latscope-init:" in ln]
    return "\n".join(panics[-2:] + tail)


def thread_map(pid: int, proc_root: Path = Path("/proc")) -> dict[int, str]:
    """{tid: comm} of process ``pid``."""
    out: dict[int, str] = {}
    try:
        tasks = list((proc_root / str(pid) / "task").iterdir())
    except OSError:
        return out
    for t in tasks:
        try:
            out[int(t.name)] = (t / "comm").read_text().strip()
        except (OSError, ValueError):
            continue
    return out


def thread_role(name: str) -> str:
    """What a QEMU thread does, from its name."""
    if name.startswith("CPU ") and "/" in name:
        return "vcpu"
    if name.startswith("IO "):
        return "iothread"
    if name == "worker":
        return "worker"
    if name.startswith("qemu-system"):
        return "main"
    return "other"


def parse_affinity(text: str | None) -> dict[str, set[int]]:
    """--vm-cpu-affinity: ``vcpu=1,io=1,main=0`` (CPU lists with - ranges and + joins)."""
    if not text:
        return {}
    out: dict[str, set[int]] = {}
    for part in text.split(","):
        key, sep, cpus = part.partition("=")
        key = key.strip()
        if not sep or key not in ("vcpu", "io", "main", "worker"):
            raise ConfigError(f"--vm-cpu-affinity {text!r}: expected ROLE=CPUS with ROLE vcpu, io, main or "
                              "worker, e.g. vcpu=1,io=1")
        if key in out:
            raise ConfigError(f"--vm-cpu-affinity {text!r}: {key} is given twice")
        try:
            cpu_set: set[int] = set()
            for item in cpus.split("+"):
                lo, _, hi = item.partition("-")
                cpu_set.update(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise ConfigError(f"--vm-cpu-affinity {text!r}: {cpus!r} is not a CPU list") from None
        allowed = os.sched_getaffinity(0)
        if not cpu_set:
            raise ConfigError(f"--vm-cpu-affinity {text!r}: {cpus!r} is an empty CPU range")
        if not cpu_set <= allowed:
            raise ConfigError(f"--vm-cpu-affinity: CPUs {sorted(cpu_set)} are not all available "
                              f"(allowed: {sorted(allowed)})")
        out[key] = cpu_set
    return out


def pin_threads(threads: dict[int, str], affinity: dict[str, set[int]]) -> dict[str, list[int]]:
    """Pin QEMU's threads by role; return {thread name: cpus} of what was pinned."""
    role_key = {"vcpu": "vcpu", "iothread": "io", "main": "main", "worker": "worker"}
    pinned: dict[str, list[int]] = {}
    for tid, name in threads.items():
        key = role_key.get(thread_role(name))
        if key and key in affinity:
            try:
                os.sched_setaffinity(tid, affinity[key])
                pinned[f"{name} ({tid})"] = sorted(affinity[key])
            except OSError:
                continue
    return pinned


def python_argv() -> tuple[str, ...]:
    """How the guest starts latscope's agent: this very interpreter (over the 9p root, or its copy in the initramfs)."""
    return (sys.executable, "-m", "latscope.remote.agent")
