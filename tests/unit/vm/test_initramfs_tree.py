"""The initramfs root's file tree and cpio: host links mirrored, ldd's ../ paths, no 9p root anywhere."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

from latscope.topo.vm import image as img
from latscope.topo.vm import initramfs
from latscope.topo.vm import qemu as q
from latscope.topo.vm.initramfs import Tree


def _entries(data: bytes) -> dict[str, tuple[int, bytes]]:
    """Parse a newc cpio: name -> (mode, body)."""
    out, i = {}, 0
    while True:
        h = data[i:i + 110]
        assert h[:6] == b"070701"
        f = [int(h[6 + 8 * k:14 + 8 * k], 16) for k in range(13)]
        mode, size, nsz = f[1], f[6], f[11]
        name = data[i + 110:i + 110 + nsz - 1].decode()
        i += 110 + nsz
        i += (-i) % 4
        body = data[i:i + size]
        i += size + (-(i + size)) % 4
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body)


def test_host_paths_keep_their_links_and_dotdot_is_resolved(tmp_path: Path) -> None:
    """A venv link chain and a lib/ -> usr/lib directory link are copied as links; a/b/../c lands in a/c."""
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/libx.so.1.2").write_bytes(b"\x7fELF lib")
    os.symlink("libx.so.1.2", tmp_path / "usr/lib/libx.so.1")
    os.symlink("usr/lib", tmp_path / "lib")
    (tmp_path / "py/bin").mkdir(parents=True)
    (tmp_path / "py/bin/python3.11").write_bytes(b"\x7fELF python")
    os.chmod(tmp_path / "py/bin/python3.11", 0o755)
    (tmp_path / "venv/bin").mkdir(parents=True)
    os.symlink(tmp_path / "py/bin/python3.11", tmp_path / "venv/bin/python")
    (tmp_path / "pkg/a").mkdir(parents=True)
    (tmp_path / "pkg/libs").mkdir()
    (tmp_path / "pkg/libs/liby.so").write_bytes(b"y")
    tree = Tree()
    assert tree.host(f"{tmp_path}/lib/libx.so.1") == f"{tmp_path}/usr/lib/libx.so.1.2"
    assert tree.host(f"{tmp_path}/venv/bin/python") == f"{tmp_path}/py/bin/python3.11"
    assert tree.host(f"{tmp_path}/pkg/a/../libs/liby.so") == f"{tmp_path}/pkg/libs/liby.so"
    tree.link("/bin/mount", "/bin/busybox")
    tree.file("/init", b"#!/bin/busybox sh\n", 0o755)
    buf = io.BytesIO()
    cpio = img._Cpio(buf)
    tree.write(cpio)
    cpio.finish()
    got = _entries(buf.getvalue())
    rel = str(tmp_path).lstrip("/")
    assert got[f"{rel}/lib"] == (stat.S_IFLNK | 0o777, b"usr/lib")
    assert got[f"{rel}/usr/lib/libx.so.1"][1] == b"libx.so.1.2"
    assert got[f"{rel}/usr/lib/libx.so.1.2"][1] == b"\x7fELF lib"
    assert got[f"{rel}/venv/bin/python"][1] == str(tmp_path / "py/bin/python3.11").encode()
    assert got[f"{rel}/py/bin/python3.11"] == (stat.S_IFREG | 0o755, b"\x7fELF python")
    assert got[f"{rel}/pkg/libs/liby.so"][1] == b"y" and not [n for n in got if ".." in n]
    assert stat.S_ISDIR(got["bin"][0]) and got["bin/mount"][1] == b"/bin/busybox"
    assert cpio.size == len(buf.getvalue())
    # Parents come before what they hold, as the kernel's unpacker needs.
    names = list(got)
    assert all(names.index(os.path.dirname(n)) < names.index(n) for n in names if "/" in n)


def test_bytecode_is_an_unchecked_hash_pyc_that_python_loads(tmp_path: Path) -> None:
    """The .pyc is hash-based and unchecked (PEP 552): valid whatever the cpio's file times say."""
    import importlib.util
    import marshal

    pyc = initramfs.bytecode(b"X = 6 * 7\n", "/guest/m.py")
    assert pyc[:4] == importlib.util.MAGIC_NUMBER and int.from_bytes(pyc[4:8], "little") == 0b01
    code = marshal.loads(pyc[16:])
    assert code.co_filename == "/guest/m.py"
    ns: dict = {}
    exec(code, ns)  # noqa: S102 - the test runs the bytecode it just compiled, to prove it is the module
    assert ns["X"] == 42


def test_the_initramfs_init_execs_the_agent_without_mounting_a_root() -> None:
    """/init of the initramfs root: no 9p, no overlay, no switch_root; PATH set for busybox's applets."""
    text = img.init_script(["virtio.ko", "9p.ko", "ext4.ko"], root="initramfs")
    assert "hostroot" not in text and "switch_root" not in text and "overlay" not in text
    assert "insmod /modules/$m" in text and "9p.ko" in text and "ext4.ko" in text
    assert "export PATH=" in text and text.rstrip().splitlines()[-1].startswith("exec $(echo")
    nine = img.init_script(["virtio.ko"])
    assert "hostroot" in nine and "switch_root" in nine


def test_qemu_shares_no_host_root_for_an_initramfs_root() -> None:
    """root_share=False: no virtio-9p device for / ; a --vm-cwd 9p share is still possible."""
    base = {"name": "t", "kernel": Path("/k"), "initrd": Path("/i"), "accel": "tcg", "control": Path("/c"),
                "console": Path("/con"), "agent_argv": ("/venv/bin/python", "-m", "latscope.remote.agent")}
    argv = q.command_line(q.QemuSpec(**base, root_share=False, cwd_share=Path("/w/cwd")), "qemu")
    assert "mount_tag=hostroot" not in " ".join(argv) and "path=/," not in " ".join(argv)
    assert "virtio-9p-pci,fsdev=cwd,mount_tag=cwd" in argv
    assert "virtio-9p-pci,fsdev=root,mount_tag=hostroot" in q.command_line(q.QemuSpec(**base), "qemu")


def test_debug_sections_are_found_in_elf_files(tmp_path: Path) -> None:
    """has_debug_info reads the section names; a file that is not ELF has none."""
    (tmp_path / "x").write_bytes(b"not an elf at all" * 10)
    assert not initramfs.has_debug_info(str(tmp_path / "x"))
    # A minimal ELF64 with a section-name table naming .debug_info.
    names = b"\0.shstrtab\0.debug_info\0"
    shoff = 64 + len(names)
    hdr = bytearray(64)
    hdr[:5] = b"\x7fELF\x02"
    hdr[0x28:0x30] = shoff.to_bytes(8, "little")
    hdr[0x3A:0x3C] = (64).to_bytes(2, "little")
    hdr[0x3C:0x3E] = (3).to_bytes(2, "little")
    hdr[0x3E:0x40] = (1).to_bytes(2, "little")

    def sh(name_off: int, off: int = 0, size: int = 0) -> bytes:
        s = bytearray(64)
        s[0:4] = name_off.to_bytes(4, "little")
        s[0x18:0x20] = off.to_bytes(8, "little")
        s[0x20:0x28] = size.to_bytes(8, "little")
        return bytes(s)

    elf = bytes(hdr) + names + sh(0) + sh(1, 64, len(names)) + sh(11)
    (tmp_path / "dbg").write_bytes(elf)
    assert initramfs.has_debug_info(str(tmp_path / "dbg"))
    (tmp_path / "nodbg").write_bytes(elf.replace(b".debug_info", b".text\0\0\0\0\0\0"))
    assert not initramfs.has_debug_info(str(tmp_path / "nodbg"))
