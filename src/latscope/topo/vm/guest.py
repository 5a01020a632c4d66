"""A booted guest with latscope's agent answering: network, image, QEMU, channel, clock; all torn down.

The order of ``running_guest`` is the order of a user's VM bring-up, and the
``finally`` paths undo it in reverse: power the guest off, kill QEMU, remove
the disk image and the namespace. A guest that does not come up within
``boot_timeout_s`` is reported with the last lines of its console.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latscope import netns as ns
from latscope.errors import ConfigError, TopologyError
from latscope.remote.clock import OffsetEstimate
from latscope.remote.host import GuestLink, connect_error
from latscope.topo.vm import image as img
from latscope.topo.vm import net as vmnet
from latscope.topo.vm import qemu as q
from latscope.topo.vm.options import VmOptions

KVM_PROBE_S = 25.0
_guests = itertools.count()
DISK_MB = 512


@dataclass
class Guest:
    """A running guest: how to reach it and what it is, for run.json."""

    link: GuestLink
    qemu: q.Qemu
    net: vmnet.HostNet
    options: VmOptions
    accel: str
    image: img.GuestImage
    boot_s: float
    hello: dict[str, Any]
    clock_before: OffsetEstimate
    cwd: dict[str, Any]
    threads: dict[int, str]
    pinned: dict[str, list[int]]
    clock_after: OffsetEstimate | None = None
    notes: list[str] = field(default_factory=list)
    #: The guest's environment document, collected once (under TCG it takes seconds).
    environment: dict[str, Any] | None = None
    #: Seconds from asking the guest for a receiver to its "ready" line, per run.
    ready_s: list[float] = field(default_factory=list)
    #: Where the time to a guest ready for a run went (s): image, boot (QEMU start to the agent), setup.
    timings: dict[str, float] = field(default_factory=dict)
    #: CLOCK_REALTIME when QEMU was started.
    started_ns: int = 0

    def describe(self) -> dict[str, Any]:
        """The VM facts stored in run.json (``extra.vm``)."""
        return {
            "options": self.options.to_json(),
            "accel": self.accel,
            "emulated_cpu": self.accel == "tcg",
            "qemu": {"argv": self.qemu.argv, "version": q.qemu_version(), "pid": self.qemu.pid},
            "guest_kernel": self.image.release,
            "initrd_bytes": self.image.initrd_bytes,
            "root": {"kind": self.image.root, **{k: self.image.contents.get(k) for k in ROOT_FACTS
                                                  if k in self.image.contents}},
            "boot_s": round(self.boot_s, 3),
            "receiver_ready_s": [round(x, 3) for x in self.ready_s],
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "qemu_started_ns": self.started_ns,
            "guest": {k: self.hello.get(k) for k in ("kernel", "nodename", "python", "uptime_s", "mounts")},
            "threads": [{"tid": tid, "name": name, "role": q.thread_role(name)}
                        for tid, name in sorted(self.threads.items())],
            "pinned": self.pinned,
            "cwd": self.cwd,
            "network": {"variant": self.net.variant, "netns": self.net.netns, "devices": list(self.net.devices),
                        "host_if": self.net.host_if, "guest_mac": self.net.guest_mac,
                        "host_address": f"{vmnet.HOST_ADDR4}/{vmnet.PREFIX4}",
                        "guest_address": f"{vmnet.GUEST_ADDR4}/{vmnet.PREFIX4}", "vhost": q.vhost_available()},
            "clock": {"method": "virtio-serial exchange, causality bound",
                      "before": self.clock_before.to_json(),
                      "after": self.clock_after.to_json() if self.clock_after else None,
                      "skew_injected_ns": self.options.clock_skew_ns},
            "notes": self.notes,
        }

    def refresh_threads(self) -> None:
        self.threads = self.qemu.threads() or self.threads


WORK_PREFIX = "latscope-vm-"
#: What run.json keeps of a self-contained image's contents (initramfs.build).
ROOT_FACTS = ("unpacked_bytes", "compression", "files", "python", "packages", "build_s")


def _next_token() -> str:
    """The owner pid, with a suffix for a second guest of the same process (names must differ)."""
    n = next(_guests)
    return ns.owner_token() + (f"v{n}" if n else "")


def _workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-"))


def reap_stale(tmp: Path | None = None, cache: Path | None = None) -> list[str]:
    """Remove the work directories and disk images of VM runs whose process is gone (SIGKILL)."""
    from latscope.process import pid_alive

    reaped = []
    places = [(Path(tmp or tempfile.gettempdir()), WORK_PREFIX), (cache or img.cache_dir(), "disk-"),
              (cache or img.cache_dir(), ".")]
    for where, prefix in places:
        try:
            entries = list(where.iterdir())
        except OSError:
            continue
        for p in entries:
            if prefix == ".":
                # A half-written image (".vmlinux-REL-KEY.PID.tmp") of a build that was killed.
                parts = p.name.split(".")
                pid = parts[-2] if p.name.startswith(".") and p.name.endswith(".tmp") and len(parts) > 3 else ""
            else:
                rest = p.name[len(prefix):] if p.name.startswith(prefix) else ""
                pid = rest.split("-")[0].split(".")[0]
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                reaped.append(str(p))
    return reaped


def make_disk(path: Path, fstype: str, size_mb: int = DISK_MB) -> None:
    """A raw disk image with an empty ext2/ext4 file system, as a user's VM disk would be."""
    with open(path, "wb") as f:
        f.truncate(size_mb << 20)
    mkfs = shutil.which(f"mkfs.{fstype}") or f"/usr/sbin/mkfs.{fstype}"
    proc = subprocess.run([mkfs, "-q", "-F", str(path)], capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        raise TopologyError(f"mkfs.{fstype} failed: {proc.stderr.strip()}")


def resolve_accel(wanted: str, image: img.GuestImage) -> tuple[str, str]:
    """The accelerator to use and why (``auto``: KVM only when a probe boot succeeds quickly; cached)."""
    if wanted == "tcg":
        return "tcg", "asked for"
    if not _kvm_opens():
        if wanted == "kvm":
            raise ConfigError("--vm-accel kvm: /dev/kvm is missing or cannot be opened")
        return "tcg", "/dev/kvm is missing or cannot be opened"
    if wanted == "kvm":
        return "kvm", "asked for"
    cache = img.cache_dir() / "kvm-probe.json"
    key = f"{os.uname().release}|{q.qemu_version()}|{image.release}"
    try:
        doc = json.loads(cache.read_text())
        if doc.get("key") == key:
            return ("kvm" if doc["ok"] else "tcg"), f"cached probe: {doc['why']}"
    except (OSError, ValueError, KeyError):
        pass
    ok, why = _probe_kvm(image)
    with contextlib.suppress(OSError):
        cache.write_text(json.dumps({"key": key, "ok": ok, "why": why}))
    return ("kvm" if ok else "tcg"), why


def _kvm_opens() -> bool:
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
        return True
    except OSError:
        return False


def _probe_kvm(image: img.GuestImage) -> tuple[bool, str]:
    """Boot the guest under KVM without a network; usable when the agent answers within KVM_PROBE_S."""
    work = _workdir()
    try:
        spec = q.QemuSpec(name=f"latscope-probe-{os.getpid()}", kernel=image.kernel, initrd=image.initrd,
                          accel="kvm", control=work / "ctl.sock", console=work / "console.log",
                          agent_argv=q.python_argv(), tap_fd=-1, root_share=image.root == "9p")
        with q.running_qemu(spec) as qemu:
            started = time.monotonic()
            try:
                sock = q.connect_control(qemu, 10)
            except TopologyError as exc:
                return False, f"KVM probe: {exc}"
            link = GuestLink(sock)
            try:
                ev = link.wait_event("boot", KVM_PROBE_S)
            finally:
                link.close()
            if ev is None or ev.header.get("ev") != "boot":
                return False, f"a KVM guest did not boot within {KVM_PROBE_S:.0f} s (KVM unusable here)"
            return True, f"a KVM guest booted in {time.monotonic() - started:.1f} s"
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def running_guest(opts: VmOptions, token: str | None = None,
                  notify=None) -> Iterator[Guest]:
    """Boot a guest attached as ``opts`` says; yield it with the agent ready and its clock set."""
    say = notify or (lambda _text: None)
    token = token or _next_token()
    affinity = q.parse_affinity(opts.affinity)
    reap_stale()
    t0 = time.monotonic()
    if opts.root == "initramfs":
        say("preparing the guest's self-contained initramfs (built once per latscope and Python)")
    image = img.guest_image(root=opts.root)
    image_s = time.monotonic() - t0
    accel, why = resolve_accel(opts.accel, image)
    work = _workdir()
    disk = None
    try:
        with vmnet.host_network(opts.variant, token) as hostnet:
            if opts.cwd in ("ext4", "ext2"):
                disk = img.cache_dir() / f"disk-{os.getpid()}.img"
                make_disk(disk, opts.cwd)
            share = None
            if opts.cwd == "9p":
                share = work / "cwd"
                share.mkdir()
            spec = q.QemuSpec(
                name=f"latscope-{token}", kernel=image.kernel, initrd=image.initrd, accel=accel,
                cpus=opts.cpus, mem_mb=opts.mem_mb, tap_fd=hostnet.tap_fd, guest_mac=hostnet.guest_mac,
                control=work / "ctl.sock", console=work / "console.log", agent_argv=q.python_argv(),
                iothread=opts.iothread, disk=disk, cwd_share=share, vhost=q.vhost_available(),
                extra_append=opts.append, root_share=opts.root == "9p",
            )
            say(f"booting the guest ({accel}, kernel {image.release})")
            with q.running_qemu(spec) as qemu:
                started = time.monotonic()
                started_ns = time.clock_gettime_ns(time.CLOCK_REALTIME)
                link = GuestLink(q.connect_control(qemu))
                try:
                    ev = link.wait_event("boot", opts.boot_timeout_s)
                    if ev is None or ev.header.get("ev") != "boot":
                        what = f"did not boot within {opts.boot_timeout_s:.0f} s" if ev is None \
                            else "stopped during boot"
                        status = qemu.wait_status(0 if ev is None else 2.0)
                        dead = "" if status is None else \
                            f" (QEMU exited with status {status}: {q.qemu_log_tail(qemu) or 'no message'})"
                        hint = "; --vm-accel tcg works where KVM guests do not (see latscope doctor)" \
                            if accel == "kvm" else ""
                        raise connect_error(f"the guest {what}{dead}{hint}", qemu.console_tail())
                    boot_s = time.monotonic() - started
                    hello = link.request("hello").header
                    netinfo = link.request("net", mac=hostnet.guest_mac, address4=f"{vmnet.GUEST_ADDR4}/{vmnet.PREFIX4}",
                                 address6=f"{vmnet.GUEST_ADDR6}/{vmnet.PREFIX6}").header
                    cwd = link.request("cwd", kind=opts.cwd, timeout_s=60).header
                    clock = sync_clock(link, opts)
                    # Now that the clock is set, the agent may import the probe in the background.
                    link.request("warm")
                    threads = qemu.threads()
                    guest = Guest(link, qemu, hostnet, opts, accel, image, boot_s,
                                  {**hello, "ifname": netinfo.get("ifname")}, clock,
                                  {"kind": opts.cwd, "path": cwd.get("path"), "mount": cwd.get("mount")},
                                  threads, q.pin_threads(threads, affinity))
                    guest.started_ns = started_ns
                    guest.timings = {"image": image_s, "boot": boot_s,
                                     "setup": time.monotonic() - started - boot_s}
                    guest.notes.append(f"accelerator {accel}: {why}")
                    guest.notes.append(root_note(image))
                    if accel == "tcg":
                        guest.notes.append("the guest CPU is emulated (TCG): latencies through it are not "
                                           "hardware figures")
                    say(f"guest up after {boot_s:.1f} s; clock offset bound +-"
                        f"{clock.uncertainty_ns / 1000:.0f} us")
                    yield guest
                finally:
                    with contextlib.suppress(Exception):
                        if qemu.alive() and not link.closed:
                            link.request("poweroff", timeout_s=2)
                    link.close()
    finally:
        if disk is not None:
            disk.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)


def root_note(image: img.GuestImage) -> str:
    """One line on what the guest ran from, with the image's size (the seed's "running from the initrd")."""
    mb = image.initrd_bytes / 1e6
    if image.root != "initramfs":
        return (f"root: the host's root read-only over virtio-9p under a tmpfs overlay; initramfs {mb:.1f} MB "
                "(busybox and modules)")
    c = image.contents
    pkgs = ", ".join(sorted(c.get("packages", {}))) or "no packages"
    unpacked = c.get("unpacked_bytes", image.initrd_bytes) / 1e6
    how = f"{c['compression']}, {unpacked:.1f} MB unpacked" if c.get("compression") else "uncompressed"
    return (f"root: none; latscope ran from a self-contained initramfs of {mb:.1f} MB ({how}: Python "
            f"{c.get('python', '?')}, {pkgs}, latscope, busybox, modules), no 9p share of the host's root")


def sync_clock(link: GuestLink, opts: VmOptions) -> OffsetEstimate:
    """Set the guest's clock from the host's, then bound what is left (remote.clock)."""
    # The first estimate after boot has been seen off by more than its own bound (the guest's
    # timekeeping settles); step until what is left is within the bound, three times at most.
    for _ in range(3):
        rough = link.exchange(24)
        if abs(rough.offset_ns) <= rough.uncertainty_ns:
            break
        link.request("step", delta_ns=-rough.offset_ns)
    if opts.clock_skew_ns:
        link.request("step", delta_ns=opts.clock_skew_ns)
    return link.exchange(opts.clock_samples)
