"""KVM: whether /dev/kvm exists and opens (it may still refuse to run guests)."""

from __future__ import annotations

import os
from typing import Any

from latscope.env.roots import Roots


def collect(roots: Roots) -> dict[str, Any]:
    path = roots.dev / "kvm"
    usable = False
    if path.exists():
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            os.close(fd)
            usable = True
        except OSError:
            usable = False
    return {"device": path.exists(), "opens": usable}
