"""The ``--vm-root initramfs`` image: busybox, the guest's modules and a self-contained Python in one cpio.

Nothing is shared with the host at run time: the guest has no root file
system, only the initramfs the kernel unpacked into memory (the seed's
"running from the initrd" case). Files keep their host paths, so the guest
starts the very command the 9p root starts (``/path/to/venv/bin/python -m
latscope.remote.agent``) and libraries are found where the host's RUNPATHs
and the dynamic loader look; symbolic links on the way (the venv's python,
Debian's /lib -> usr/lib) are copied as links. latscope itself goes into the
venv's site-packages. ``pyimage`` decides which Python files go in; this
module adds the interpreter, every shared library ``ldd`` lists for it and
for the extension modules (the dynamic loader too), busybox with its applets
as links (the agent runs ``mount`` and ``ip``), and bytecode.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import marshal
import os
import posixpath
import shutil
import site as sitemod
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import latscope
from latscope.errors import TopologyError
from latscope.topo.vm import image as img
from latscope.topo.vm import pyimage

#: Bumped when what goes into the image, or how, changes.
FORMAT = 1
#: Modules the kernel would ask modprobe for: ext4's softdep crypto-crc32c ("Cannot load crc32c driver" at
#: mount), the time-sensitive qdiscs the environment's qdisc probe adds. With no root file system there is
#: no modprobe to answer, so /init loads them.
ROOTLESS_MODULES = ("crc32c_generic", "sch_etf", "sch_taprio")
#: Tools the guest runs besides Python, copied with their libraries when the host has them.
OPTIONAL_TOOLS = ("cyclictest",)


class Tree:
    """The image's file tree: directories, links and files, keyed by absolute path."""

    def __init__(self) -> None:
        self.nodes: dict[str, tuple] = {"/": ("dir",)}

    def _parent(self, path: str, host: bool) -> str:
        """``path`` with its directories resolved through the tree's links (created when missing).

        With ``host``, a missing directory that is a symbolic link on the host
        becomes the same link in the tree, so the image mirrors the host.
        """
        parts = [p for p in path.split("/") if p]
        cur, i, hops = "/", 0, 0
        while i < len(parts) - 1:
            if parts[i] in (".", ".."):
                # Of the directory reached so far, links resolved (ldd prints numpy/_core/../../numpy.libs).
                cur, i = (posixpath.dirname(cur) if parts[i] == ".." else cur), i + 1
                continue
            nxt = posixpath.join(cur, parts[i])
            node = self.nodes.get(nxt)
            if node is None:
                node = ("link", os.readlink(nxt)) if host and os.path.islink(nxt) else ("dir",)
                self.nodes[nxt] = node
            if node[0] == "link":
                hops += 1
                if hops > 40:
                    raise TopologyError(f"{path}: too many levels of symbolic links")
                parts = [p for p in posixpath.join(cur, node[1]).split("/") if p] + parts[i + 1:]
                cur, i = "/", 0
                continue
            if node[0] != "dir":
                raise TopologyError(f"{path}: {nxt} is a file in the image, not a directory")
            cur, i = nxt, i + 1
        return posixpath.join(cur, parts[-1]) if parts else "/"

    def dir(self, path: str) -> None:
        full = self._parent(path.rstrip("/") + "/x", host=False)
        self.nodes.setdefault(posixpath.dirname(full), ("dir",))

    def link(self, path: str, target: str) -> None:
        self.nodes.setdefault(self._parent(path, host=False), ("link", target))

    def file(self, path: str, source: str | bytes, mode: int = 0o644) -> str:
        """A file from a host path or bytes at ``path``; the path it landed at."""
        at = self._parent(path, host=False)
        self.nodes[at] = ("file", source, mode)
        return at

    def host(self, path: str, depth: int = 0) -> str:
        """Copy the host's ``path`` to the same place, links and all; the path of the file itself."""
        at = self._parent(path, host=True)
        if os.path.islink(path) and depth < 40:
            target = os.readlink(path)
            self.nodes.setdefault(at, ("link", target))
            return self.host(posixpath.join(posixpath.dirname(path), target), depth + 1)
        if not os.path.isfile(path):
            raise TopologyError(f"{path} is missing (needed in the guest's initramfs)")
        self.nodes.setdefault(at, ("file", path, os.stat(path).st_mode & 0o777))
        return at

    def write(self, cpio: img._Cpio) -> None:
        for path in sorted(self.nodes):
            if path == "/":
                continue
            kind, *rest = self.nodes[path]
            name = path.lstrip("/")
            if kind == "dir":
                cpio.directory(name)
            elif kind == "link":
                cpio.symlink(name, rest[0])
            elif isinstance(rest[0], bytes):
                cpio.file(name, rest[0], rest[1])
            else:
                cpio.file_from(name, Path(rest[0]), rest[1])


def shared_libraries(elves: list[str]) -> list[str]:
    """Every library ``ldd`` lists for ``elves`` (the dynamic loader included), as ldd names them."""
    found: set[str] = set()
    for i in range(0, len(elves), 64):
        chunk = elves[i:i + 64]
        try:
            out = subprocess.run(["ldd", *chunk], capture_output=True, text=True, timeout=60, check=False).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TopologyError(f"ldd failed ({exc}): it lists the libraries the guest's Python needs") from None
        for line in out.splitlines():
            if not line.startswith("\t"):
                continue
            text = line.strip()
            if "=> not found" in text:
                raise TopologyError(f"{text.split()[0]} is not found for the guest's Python (ldd)")
            path = (text.split("=>", 1)[1] if "=>" in text else text).split("(")[0].strip()
            if path.startswith("/"):
                found.add(path)
    return sorted(found)


def has_debug_info(path: str) -> bool:
    """True when an ELF64 file has .debug_* sections (a source-built interpreter keeps them: 23 MB)."""
    try:
        with open(path, "rb") as f:
            hdr = f.read(64)
            if len(hdr) < 64 or hdr[:4] != b"\x7fELF" or hdr[4] != 2:
                return False
            shoff = int.from_bytes(hdr[0x28:0x30], "little")
            entsize, num, strndx = (int.from_bytes(hdr[o:o + 2], "little") for o in (0x3A, 0x3C, 0x3E))
            f.seek(shoff)
            table = f.read(entsize * num)
            sh = [table[k * entsize:(k + 1) * entsize] for k in range(num)]
            if strndx >= len(sh):
                return False
            f.seek(int.from_bytes(sh[strndx][0x18:0x20], "little"))
            names = f.read(int.from_bytes(sh[strndx][0x20:0x28], "little"))
    except OSError:
        return False
    return any(names[int.from_bytes(s[0:4], "little"):].startswith(b".debug_") for s in sh if len(s) >= 8)


def bytecode(source: bytes, guest_path: str) -> bytes:
    """An unchecked hash-based .pyc (PEP 552): valid whatever the file times, never recompiled in the guest."""
    code = compile(source, guest_path, "exec", dont_inherit=True)
    return (importlib.util.MAGIC_NUMBER + (0b01).to_bytes(4, "little") + importlib.util.source_hash(source)
            + marshal.dumps(code))


def latscope_dir() -> Path:
    return Path(latscope.__file__).resolve().parent


def key(kernel: img.GuestKernel) -> str:
    """Changes with the 9p image's inputs, the interpreter, any site-packages change and latscope's source."""
    h = hashlib.sha256(f"{img.image_key(kernel)};py-format={FORMAT};".encode())
    exe = os.path.realpath(sys.executable)
    st = os.stat(exe)
    h.update(f"{sys.executable}>{exe}:{st.st_size}:{st.st_mtime_ns};{sys.version};".encode())
    for site in sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib"), *sitemod.getsitepackages()}):
        with_versions = sorted(os.listdir(site)) if os.path.isdir(site) else []  # dist-info names carry versions
        h.update(f"{site}:{','.join(with_versions)};".encode())
    root = latscope_dir()
    for f in sorted(root.rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts:
            h.update(f"{f.relative_to(root)}:".encode() + hashlib.sha256(f.read_bytes()).digest())
    for tool in (*OPTIONAL_TOOLS, "strip"):
        h.update(f"{tool}={shutil.which(tool)};".encode())
    return h.hexdigest()[:16]


def build(kernel: img.GuestKernel, out: Path, compress: bool = False) -> dict:
    """Write the image to ``out``; return what went in (stored next to it and in run.json)."""
    t0 = time.monotonic()
    p = pyimage.probe()
    sel = pyimage.select(p, latscope_dir())
    tree = Tree()
    for d in ("/proc", "/sys", "/dev", "/tmp", "/run", "/modules", "/etc"):
        tree.dir(d)
    tree.link("/var/run", "../run")  # where pyroute2 keeps named namespaces (the qdisc probe makes one)
    mods = img.module_order(kernel.modules, img.GUEST_MODULES + ROOTLESS_MODULES)
    tree.file("/init", img.init_script(mods, root="initramfs").encode(), 0o755)
    for m in mods:
        tree.file(f"/modules/{Path(m).name}", img._module_bytes(kernel.modules / m), 0o644)
    busybox = str(img.busybox_path())
    tree.file("/bin/busybox", busybox, 0o755)
    listed = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, timeout=30, check=False)
    if listed.returncode != 0 or not listed.stdout.split():
        raise TopologyError(f"{busybox} --list-full names no applets: the guest would have no mount or ip")
    for a in listed.stdout.split():
        tree.link("/" + a, "/bin/busybox")
    # The interpreter as the guest starts it (the venv's link), the venv's pyvenv.cfg, then the files.
    tree.host(p.executable)
    if p.prefix != p.base_prefix and os.path.isfile(os.path.join(p.prefix, "pyvenv.cfg")):
        tree.host(os.path.join(p.prefix, "pyvenv.cfg"))
    for guest, host in sel.files.items():
        if guest == host:
            tree.host(host)
        else:
            tree.file(guest, host, os.stat(host).st_mode & 0o777)
    compiled = 0
    if p.magic == importlib.util.MAGIC_NUMBER.hex() and p.cache_tag == sys.implementation.cache_tag:
        for guest in sorted(sel.compiled):
            d, base = posixpath.split(guest)
            source = Path(sel.files[guest]).read_bytes()
            tree.file(f"{d}/__pycache__/{base[:-3]}.{p.cache_tag}.pyc", bytecode(source, guest))
            compiled += 1
    tools = [t for t in (shutil.which(n) for n in OPTIONAL_TOOLS) if t]
    for t in tools:
        tree.host(t)
    for lib in shared_libraries([os.path.realpath(p.executable), *sel.extensions, *tools]):
        tree.host(lib)
    out_tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        # Named like a VM work directory, so that the next VM run removes it if this process is SIGKILLed
        # (as it does the half-written image: guest.reap_stale).
        from latscope.topo.vm.guest import WORK_PREFIX

        with tempfile.TemporaryDirectory(prefix=f"{WORK_PREFIX}{os.getpid()}-initrd-") as tmp:
            stripped = _strip_debug(tree, p.base_prefix, Path(tmp))
            with open(out_tmp, "wb") as raw:
                sink = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) if compress else raw
                cpio = img._Cpio(sink)
                tree.write(cpio)
                cpio.finish()
                if compress:
                    sink.close()
        os.replace(out_tmp, out)
    except OSError as exc:
        raise TopologyError(f"cannot write the initramfs {out}: {exc.strerror or exc}") from None
    finally:
        out_tmp.unlink(missing_ok=True)
    return {
        "root": "initramfs", "bytes": out.stat().st_size, "unpacked_bytes": cpio.size,
        "compression": "gzip" if compress else None, "files": sum(1 for n in tree.nodes.values() if n[0] == "file"),
        "bytecode": compiled, "python": p.version, "executable": p.executable, "packages": sel.packages,
        "left_out": list(sel.left_out), "stripped": stripped, "tools": tools,
        "build_s": round(time.monotonic() - t0, 3),
    }


def _strip_debug(tree: Tree, base_prefix: str, tmp: Path) -> list[str]:
    """Debug sections off the interpreter's own ELF files (a pyenv build keeps them); wheels come stripped."""
    strip = shutil.which("strip")
    done: list[str] = []
    if strip is None:
        return done
    for n, (path, node) in enumerate(sorted(tree.nodes.items())):
        if node[0] != "file" or not isinstance(node[1], str) or not node[1].startswith(base_prefix.rstrip("/") + "/"):
            continue
        if not has_debug_info(node[1]):
            continue
        out = tmp / f"{n}-{posixpath.basename(path)}"
        proc = subprocess.run([strip, "--strip-debug", "-o", str(out), node[1]], capture_output=True, timeout=120,
                              check=False)
        if proc.returncode == 0:
            tree.nodes[path] = ("file", str(out), node[2])
            done.append(node[1])
    return done


def summary_path(initrd: Path) -> Path:
    return initrd.with_name(initrd.name + ".json")


def write_summary(initrd: Path, doc: dict) -> None:
    img._write_atomic(summary_path(initrd), json.dumps(doc, indent=1).encode())
