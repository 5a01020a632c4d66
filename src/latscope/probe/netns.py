"""Entering a network namespace from inside a process (setns), never via `ip netns exec`.

`ip netns exec` also unshares the mount namespace and remounts /sys, which
hides /sys/kernel/tracing; setns(CLONE_NEWNET) changes only the network view.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from latscope.errors import TopologyError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def enter(name: str) -> None:
    """Move the calling process (single-threaded) into network namespace ``name``."""
    path = os.path.join(NETNS_RUN_DIR, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TopologyError(f"network namespace {name!r} does not exist") from None
    except PermissionError:
        raise TopologyError(f"network namespace {name!r}: permission denied (needs root)") from None
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise TopologyError(f"cannot enter network namespace {name!r}: {os.strerror(err)}")
    finally:
        os.close(fd)
