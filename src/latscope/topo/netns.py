"""Network namespaces owned by latscope: named after the process that made them.

A name carries the owner's pid, so namespaces left behind by a process that
was killed (SIGKILL gives no chance to clean up) are found and removed by the
next run instead of piling up.
"""

from __future__ import annotations

import os
import re

from latscope.process import pid_alive

PREFIX = "latscope-"
_NAME = re.compile(rf"^{PREFIX}(\d+)([a-z0-9]*)-(\w+)$")
RUN_DIR = "/run/netns"


def owner_token() -> str:
    """The token in the names of this process's namespaces: its pid (roles keep them apart)."""
    return str(os.getpid())


def name(token: str, role: str) -> str:
    """The namespace name for ``role`` (tx, rx, ...) of ``token``."""
    return f"{PREFIX}{token}-{role}"


def create(nsname: str) -> None:
    """Create a named network namespace."""
    from pyroute2 import netns

    netns.create(nsname)


def remove(nsname: str) -> None:
    """Remove a named network namespace; links inside it go with it. Missing is fine."""
    from pyroute2 import netns

    try:
        netns.remove(nsname)
    except FileNotFoundError:
        return
    except OSError:
        # Not a mount point any more (half removed before): drop the name.
        path = os.path.join(RUN_DIR, nsname)
        if os.path.lexists(path):
            os.unlink(path)


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


def reap_stale() -> list[str]:
    """Remove latscope namespaces whose owning process no longer exists; return their names."""
    reaped = []
    for nsname in stale():
        remove(nsname)
        reaped.append(nsname)
    return reaped

