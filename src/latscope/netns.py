"""Network namespaces owned by latscope: named after the process that made them, and entered with setns.

The one home of the namespace primitives env, probe and topo share (it sits
below all three). A name carries the owner's pid, so namespaces left behind
by a process that was killed (SIGKILL gives no chance to clean up) are found
and removed by the next run instead of piling up.

Entering is setns(CLONE_NEWNET), never `ip netns exec`: that also unshares
the mount namespace and remounts /sys, which hides /sys/kernel/tracing;
setns changes only the network view.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

from latscope.errors import TopologyError
from latscope.libc import LIBC
from latscope.process import pid_alive
from latscope.stopping import deferred

PREFIX = "latscope-"
_NAME = re.compile(rf"^{PREFIX}(\d+)([a-z0-9]*)-(\w+)$")
RUN_DIR = "/run/netns"
NETNS_RUN_DIR = RUN_DIR
CLONE_NEWNET = 0x40000000



def owner_token() -> str:
    """The token in the names of this process's namespaces: its pid (roles keep them apart)."""
    return str(os.getpid())


def name(token: str, role: str) -> str:
    """The namespace name for ``role`` (tx, rx, ...) of ``token``."""
    return f"{PREFIX}{token}-{role}"


def create(nsname: str) -> None:
    """Create a named network namespace."""
    from pyroute2 import netns

    netns.create(nsname, libc=LIBC)


def remove(nsname: str) -> None:
    """Remove a named network namespace; links inside it go with it. Missing is fine."""
    from pyroute2 import netns

    try:
        netns.remove(nsname, libc=LIBC)
    except FileNotFoundError:
        return
    except OSError:
        # Not a mount point any more (half removed before): drop the name.
        path = os.path.join(RUN_DIR, nsname)
        if os.path.lexists(path):
            os.unlink(path)


def rtnl(nsname: str) -> Any:
    """pyroute2's netlink connection inside ``nsname`` (a context manager).

    It is given this process's C library: pyroute2 opens the socket in a forked
    child, which otherwise looks the library up with ``ldconfig -p`` each time.
    """
    from pyroute2 import NetNS

    return NetNS(nsname, libc=LIBC)


@contextlib.contextmanager
def scratch(role: str = "probe") -> Iterator[str]:
    """A throw-away namespace of this process for asking the kernel something; removed afterwards.

    A stop signal waits until the namespace is gone again (it used to land
    between create and remove and leave it behind); a probe takes milliseconds.
    """
    nsname = name(owner_token(), role)
    with deferred():
        create(nsname)
        try:
            yield nsname
        finally:
            remove(nsname)


def owned() -> list[str]:
    """latscope's namespaces currently present."""
    try:
        return sorted(n for n in os.listdir(RUN_DIR) if _NAME.match(n))
    except FileNotFoundError:
        return []


def stale() -> list[str]:
    """latscope namespaces whose owning process no longer exists."""
    out = []
    for nsname in owned():
        m = _NAME.match(nsname)
        assert m is not None
        pid = int(m.group(1))
        if pid != os.getpid() and not pid_alive(pid):
            out.append(nsname)
    return out


def reap_stale(kept: list[str] | None = None) -> list[str]:
    """Remove latscope namespaces whose owning process no longer exists; return their names.

    One that cannot be removed (no CAP_SYS_ADMIN to unmount it, or busy) is left where it is, with the
    reason appended to ``kept``: a run goes on without reaping what another run can reap later.
    """
    reaped = []
    for nsname in stale():
        try:
            remove(nsname)
        except OSError as exc:
            if kept is not None:
                kept.append(f"namespace {nsname} ({exc.strerror or exc})")
            continue
        reaped.append(nsname)
    return reaped


def enter(nsname: str) -> None:
    """Move the calling thread (a single-threaded process: the process) into network namespace ``nsname``."""
    path = os.path.join(RUN_DIR, nsname)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TopologyError(f"network namespace {nsname!r} does not exist") from None
    except PermissionError:
        raise TopologyError(f"network namespace {nsname!r}: permission denied (needs root)") from None
    try:
        if LIBC.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise TopologyError(f"cannot enter network namespace {nsname!r}: {os.strerror(err)}")
    finally:
        os.close(fd)


def in_namespace(nsname: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` in a short-lived thread that entered ``nsname`` (setns changes only the calling thread)."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            fd = os.open(os.path.join(RUN_DIR, nsname), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if LIBC.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(f"setns {nsname}")
            finally:
                os.close(fd)
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=body, name="latscope-netns")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
