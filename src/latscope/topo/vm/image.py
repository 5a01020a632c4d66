"""The guest's kernel and initramfs, built from what the host has and cached.

The guest runs Debian's distribution kernel (package linux-image-amd64). Under
TCG every instruction is emulated, so boot time matters: the uncompressed
vmlinux boots about 12 s sooner than the bzImage (no in-guest decompression),
and the initramfs is a plain cpio of busybox, the few modules the guest needs
and /init. /init mounts the host's root read-only over virtio-9p with a tmpfs
overlay on top and `switch_root`s into it, so the guest runs the very Python
and latscope the host has, without an image to build or keep in step.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from latscope.errors import ConfigError, StoreError, TopologyError
from latscope.files import write_atomic

BOOT = Path("/boot")
MODULES_ROOT = Path("/lib/modules")
BUSYBOX = ("/bin/busybox", "/usr/bin/busybox")
XZ_MAGIC = b"\xfd7zXZ\x00"
#: Loaded in this order (dependencies are added from modules.dep).
GUEST_MODULES = ("virtio_pci", "9p", "9pnet_virtio", "overlay", "virtio_net", "virtio_blk", "virtio_console",
                 "ext4")
#: Bumped when the layout of the initramfs or /init changes.
IMAGE_FORMAT = 3


@dataclass(frozen=True)
class GuestKernel:
    """A kernel the guest can boot and the modules that go with it."""

    release: str
    vmlinuz: Path
    modules: Path


@dataclass(frozen=True)
class GuestImage:
    """What QEMU boots: -kernel and -initrd, and what they were made from."""

    kernel: Path
    initrd: Path
    release: str
    initrd_bytes: int
    built: bool  # False when both came from the cache
    root: str = "9p"
    #: What a self-contained (initramfs root) image holds: sizes, Python, packages, build time.
    contents: dict = field(default_factory=dict)


def cache_dir() -> Path:
    """Where built images are kept: $LATSCOPE_CACHE, else /var/cache/latscope (root) or ~/.cache/latscope."""
    env = os.environ.get("LATSCOPE_CACHE")
    if env:
        base = Path(env)
    elif os.geteuid() == 0:
        base = Path("/var/cache/latscope")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "latscope"
    return base / "vm"


def find_kernel(boot: Path = BOOT, modules_root: Path = MODULES_ROOT, release: str | None = None) -> GuestKernel:
    """The newest /boot/vmlinuz-* with its modules (or ``release``); a clear error when there is none."""
    found = []
    for vmlinuz in sorted(boot.glob("vmlinuz-*")):
        rel = vmlinuz.name[len("vmlinuz-"):]
        if (modules_root / rel / "modules.dep").is_file() and (release is None or rel == release):
            found.append(GuestKernel(rel, vmlinuz, modules_root / rel))
    if not found:
        raise ConfigError("no guest kernel: install Debian's linux-image-amd64 (a /boot/vmlinuz-* with its "
                          "/lib/modules), or point --vm-kernel at one")
    return max(found, key=lambda k: _version_key(k.release))


def _version_key(release: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in release.replace("-", ".").split("."))


def decompress_kernel(vmlinuz: Path, out: Path) -> None:
    """Extract the uncompressed vmlinux from a bzImage whose payload is XZ (Debian's)."""
    data = vmlinuz.read_bytes()
    at = data.find(XZ_MAGIC)
    if at < 0:
        raise TopologyError(f"{vmlinuz}: no XZ payload found (cannot make an uncompressed kernel)")
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        raw = dec.decompress(data[at:])
    except lzma.LZMAError as exc:
        raise TopologyError(f"{vmlinuz}: XZ payload does not decompress ({exc})") from None
    if raw[:4] != b"\x7fELF":
        raise TopologyError(f"{vmlinuz}: the decompressed payload is not an ELF kernel")
    _write_atomic(out, raw)


def module_order(modules: Path, wanted: tuple[str, ...] = GUEST_MODULES) -> list[str]:
    """Relative paths of ``wanted`` modules and their dependencies, dependencies first."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules / "modules.dep").read_text().splitlines():
        if ":" not in line:
            continue
        path, rest = line.split(":", 1)
        deps[path] = rest.split()
        name = Path(path).name.split(".ko")[0]
        by_name[name.replace("-", "_")] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for d in reversed(deps.get(path, [])):
            visit(d)
        order.append(path)

    for name in wanted:
        found = by_name.get(name.replace("-", "_"))
        if found is None:
            builtin = modules / "modules.builtin"
            if builtin.is_file() and any(Path(b).name.split(".ko")[0] == name
                                         for b in builtin.read_text().split()):
                continue
            raise TopologyError(f"guest kernel {modules.name} has no module {name}")
        visit(found)
    return order


def init_script(modules: list[str], root: str = "9p") -> str:
    """/init of the initramfs: modules, then the agent, whose command comes from the kernel command line.

    ``root`` 9p: the host's root read-only over 9p under a tmpfs overlay, and
    ``switch_root`` into it. ``root`` initramfs: no root file system at all;
    the agent runs from the initramfs itself, as PID 1.
    The command is ``latscope.exec=`` (commas for spaces), so one cached image
    serves every checkout of latscope.
    """
    names = " ".join(Path(m).name for m in modules)
    head = f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /lower /upper /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
for m in {names}; do /bin/busybox insmod /modules/$m || echo "latscope-init: insmod $m failed"; done
cmd=""
for arg in $(/bin/busybox cat /proc/cmdline); do
  case "$arg" in latscope.exec=*) cmd="${{arg#latscope.exec=}}" ;; esac
done
fail() {{ echo "latscope-init: $*"; /bin/busybox poweroff -f; }}
"""
    if root == "initramfs":
        # The kernel starts /init with no PATH; the agent finds busybox's mount and ip through it.
        return head.replace("/lower /upper /newroot", "/tmp") + """\
[ -n "$cmd" ] || fail "no latscope.exec= on the kernel command line"
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
echo "latscope-init: starting ${cmd} from the initramfs"
exec $(echo "$cmd" | /bin/busybox tr , ' ')
"""
    return head + """/bin/busybox mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower \\
  || fail "cannot mount the host root over 9p"
/bin/busybox mount -t tmpfs -o size=256m tmpfs /upper
/bin/busybox mkdir -p /upper/u /upper/w
/bin/busybox mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot \\
  || fail "cannot mount the overlay root"
for d in proc sys dev; do /bin/busybox mount --move /$d /newroot/$d; done
[ -n "$cmd" ] || fail "no latscope.exec= on the kernel command line"
echo "latscope-init: starting ${cmd}"
exec /bin/busybox switch_root /newroot $(echo "$cmd" | /bin/busybox tr , ' ')
"""


def busybox_path() -> Path:
    for p in BUSYBOX:
        if os.path.isfile(p):
            return Path(p)
    raise ConfigError("busybox is missing: install Debian's busybox-static (the guest's /init runs on it)")


def build_initrd(kernel: GuestKernel, out: Path) -> int:
    """Write the initramfs (uncompressed newc cpio) to ``out``; return its size in bytes."""
    mods = module_order(kernel.modules)
    writer = _Cpio()
    for d in ("bin", "modules", "proc", "sys", "dev", "lower", "upper", "newroot"):
        writer.directory(d)
    writer.file("bin/busybox", busybox_path().read_bytes(), 0o755)
    writer.file("init", init_script(mods).encode(), 0o755)
    for m in mods:
        writer.file(f"modules/{Path(m).name}", _module_bytes(kernel.modules / m), 0o644)
    data = writer.finish()
    _write_atomic(out, data)
    return len(data)


def _module_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(raw)
    return raw


def image_key(kernel: GuestKernel) -> str:
    """Changes when the kernel, its modules, busybox or the image layout change."""
    h = hashlib.sha256()
    for p in (kernel.vmlinuz, kernel.modules / "modules.dep", busybox_path()):
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns};".encode())
    h.update(f"format={IMAGE_FORMAT};".encode())
    h.update(init_script(module_order(kernel.modules)).encode())
    return h.hexdigest()[:16]


def guest_image(kernel: GuestKernel | None = None, cache: Path | None = None, root: str = "9p",
                compress: bool = False) -> GuestImage:
    """The kernel and initramfs for a guest (``root``: 9p or initramfs), from the cache or built now."""
    kernel = kernel or find_kernel()
    cache = cache or cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TopologyError(f"cannot create the VM image cache {cache}: {exc.strerror}") from None
    key = image_key(kernel)
    vmlinux = cache / f"vmlinux-{kernel.release}-{key}"
    built = False
    if not vmlinux.is_file():
        decompress_kernel(kernel.vmlinuz, vmlinux)
        built = True
    if root == "initramfs":
        # Its own name: a 9p run does not prune it, nor it the 9p image.
        from latscope.topo.vm import initramfs

        stem = f"pyroot-{kernel.release}-{initramfs.key(kernel)}."
        initrd = cache / f"{stem}cpio{'.gz' if compress else ''}"
        if not initrd.is_file() or not initramfs.summary_path(initrd).is_file():
            initramfs.write_summary(initrd, initramfs.build(kernel, initrd, compress))
            built = True
            _prune(cache, {vmlinux.name, stem}, ("vmlinux-", "pyroot-"))
        try:
            contents = json.loads(initramfs.summary_path(initrd).read_text())
        except (OSError, ValueError):
            contents = {}
        return GuestImage(vmlinux, initrd, kernel.release, initrd.stat().st_size, built, root, contents)
    initrd = cache / f"initrd-{kernel.release}-{key}.cpio"
    if not initrd.is_file():
        build_initrd(kernel, initrd)
        built = True
    if built:
        _prune(cache, {vmlinux.name, initrd.name}, ("vmlinux-", "initrd-"))
    return GuestImage(vmlinux, initrd, kernel.release, initrd.stat().st_size, built)


def _prune(cache: Path, keep: set[str], kinds: tuple[str, ...]) -> None:
    """Old images of other keys go (names starting with ``kinds`` but none of ``keep``): one kernel
    image is tens of MB, a Python initramfs a hundred or more."""
    for p in cache.iterdir():
        if p.name.startswith(kinds) and not p.name.startswith(tuple(keep)) and p.is_file():
            p.unlink(missing_ok=True)


def _write_atomic(out: Path, data: bytes) -> None:
    try:
        write_atomic(out, data)
    except StoreError as exc:
        raise TopologyError(str(exc)) from None


class _Sink(Protocol):
    """Where an image's bytes go: a file, or a gzip stream over one."""

    def write(self, data: bytes, /) -> object: ...


class _Cpio:
    """A minimal writer of the "newc" cpio format the kernel unpacks as initramfs.

    With a ``sink`` (a binary file) entries are written as they come, so an
    image of a few hundred MB never sits in memory; without one, ``finish``
    returns the bytes.
    """

    def __init__(self, sink: _Sink | None = None) -> None:
        self.parts: list[bytes] = []
        self.sink = sink
        self.ino = 1
        self.size = 0

    def _emit(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink.write(data)
        else:
            self.parts.append(data)
        self.size += len(data)

    def _header(self, name: str, mode: int, size: int) -> None:
        name_b = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name_b), 0]
        header = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
        self.ino += 1
        self._emit(header + name_b + _pad(len(header) + len(name_b)))

    def _entry(self, name: str, mode: int, data: bytes) -> None:
        self._header(name, mode, len(data))
        self._emit(data + _pad(len(data)))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755, b"")

    def file(self, name: str, data: bytes, perm: int) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def file_from(self, name: str, path: Path, perm: int) -> None:
        """A regular file copied from ``path`` in chunks."""
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self._header(name, stat.S_IFREG | perm, size)
            done = 0
            while chunk := f.read(1 << 20):
                self._emit(chunk)
                done += len(chunk)
        if done != size:
            raise TopologyError(f"{path} changed size while the initramfs was written")
        self._emit(_pad(size))

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, b"")
        return b"".join(self.parts)


def _pad(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)
