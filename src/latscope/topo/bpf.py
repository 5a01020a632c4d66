"""XDP programs of a few instructions, assembled here and loaded with the bpf(2) system call.

No compiler and no libbpf: the programs latscope needs are four BPF
instructions long (redirect every frame to one interface; or pass every
frame), so they are written out as bytes and loaded with BPF_PROG_LOAD
through ctypes. A loaded program lives as long as a file descriptor or a
device holds it: attached to a veth, it goes when the veth goes (with its
namespace), so nothing outlives a killed run.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from dataclasses import dataclass

from latscope.errors import TopologyError
from latscope.libc import LIBC

#: bpf(2) per architecture (asm/unistd.h).
SYSCALL_BPF = {"x86_64": 321, "aarch64": 280, "i686": 357, "armv7l": 386, "ppc64le": 361, "s390x": 351,
               "riscv64": 280}
BPF_PROG_LOAD, BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD = 5, 13, 15
BPF_PROG_TYPE_XDP = 6
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = 0, 1, 2, 3, 4
BPF_FUNC_REDIRECT = 23

# Opcodes (linux/bpf_common.h, linux/bpf.h): class | op | source.
BPF_ALU64_MOV_K = 0x07 | 0xB0 | 0x00
BPF_JMP_CALL = 0x05 | 0x80
BPF_JMP_EXIT = 0x05 | 0x90
#: bpf_attr is a union; the kernel wants every byte past the fields it knows to be zero.
ATTR_SIZE = 128
PROG_INFO_SIZE = 80



def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One struct bpf_insn: u8 code, u8 dst_reg:4 | src_reg:4, s16 off, s32 imm (little-endian)."""
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def redirect_program(ifindex: int) -> bytes:
    """``return bpf_redirect(ifindex, 0);``: every frame out of interface ``ifindex``."""
    if not 0 < ifindex < 1 << 31:
        raise ValueError(f"ifindex {ifindex} out of range")
    return (insn(BPF_ALU64_MOV_K, dst=1, imm=ifindex)
            + insn(BPF_ALU64_MOV_K, dst=2, imm=0)
            + insn(BPF_JMP_CALL, imm=BPF_FUNC_REDIRECT)
            + insn(BPF_JMP_EXIT))


def pass_program() -> bytes:
    """``return XDP_PASS;``: every frame on to the stack."""
    return insn(BPF_ALU64_MOV_K, dst=0, imm=XDP_PASS) + insn(BPF_JMP_EXIT)


@dataclass(frozen=True)
class ProgInfo:
    """What the kernel says about a loaded program: its id, its tag (hash of the instructions) and name."""

    id: int
    tag: str
    name: str


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    nr = SYSCALL_BPF.get(platform.machine())
    if nr is None:
        raise OSError(0, f"bpf(2): unknown syscall number on {platform.machine()}")
    ret = LIBC.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


def load_xdp(program: bytes, name: str) -> int:
    """Load ``program`` as an XDP program (license GPL: bpf_redirect needs it); return its fd.

    Raises TopologyError with the verifier's log when the kernel refuses.
    """
    if len(program) % 8:
        raise ValueError("a BPF program is a whole number of 8-byte instructions")
    code = ctypes.create_string_buffer(program, len(program))
    license_ = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(4096)
    attr = ctypes.create_string_buffer(ATTR_SIZE)
    # prog_type, insn_cnt, insns, license, log_level, log_size, log_buf, kern_version, prog_flags, prog_name[16]
    struct.pack_into("<IIQQIIQII16s", attr, 0, BPF_PROG_TYPE_XDP, len(program) // 8, ctypes.addressof(code),
                     ctypes.addressof(license_), 1, len(log), ctypes.addressof(log), 0, 0, name.encode()[:15])
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError as exc:
        text = log.value.decode(errors="replace").strip().replace("\n", "; ")
        raise TopologyError(f"cannot load XDP program {name}: {exc.strerror}" + (f" ({text})" if text else "")) \
            from None


def prog_info(fd: int) -> ProgInfo:
    """BPF_OBJ_GET_INFO_BY_FD of a program fd."""
    info = ctypes.create_string_buffer(PROG_INFO_SIZE)
    attr = ctypes.create_string_buffer(ATTR_SIZE)
    struct.pack_into("<IIQ", attr, 0, fd, len(info), ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    _type, prog_id = struct.unpack_from("<II", info, 0)
    tag = info.raw[8:16].hex()
    name = info.raw[64:80].split(b"\0", 1)[0].decode(errors="replace")
    return ProgInfo(prog_id, tag, name)


def prog_exists(prog_id: int) -> bool:
    """True while the kernel still holds program ``prog_id`` (for checking that nothing outlived a run)."""
    attr = ctypes.create_string_buffer(ATTR_SIZE)
    struct.pack_into("<I", attr, 0, prog_id)
    try:
        fd = _bpf(BPF_PROG_GET_FD_BY_ID, attr)
    except OSError as exc:
        if exc.errno == 2:  # ENOENT
            return False
        raise
    os.close(fd)
    return True
