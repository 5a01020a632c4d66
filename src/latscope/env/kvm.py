"""What this host offers a VM run: KVM (present, opens, and whether a guest really boots), QEMU, vhost-net,
tap/macvtap, a guest kernel and busybox for latscope's guest image."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
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
    return {"device": path.exists(), "opens": usable, **_vm_host(roots)}


def _vm_host(roots: Roots) -> dict[str, Any]:
    # Imported here: the image module is the VM topology's, and most runs never need it.
    from latscope.topo.vm import image
    from latscope.topo.vm.qemu import qemu_version

    qemu = shutil.which("qemu-system-x86_64")
    try:
        kernel: str | None = image.find_kernel().release
    except Exception:  # noqa: BLE001 - any failure means "no usable guest kernel"
        kernel = None
    probe = None
    try:
        probe = json.loads((image.cache_dir() / "kvm-probe.json").read_text())
    except (OSError, ValueError):
        pass
    return {
        "qemu": qemu,
        "qemu_version": qemu_version(qemu) if qemu else None,
        "guest_kernel": kernel,
        "busybox": any(Path(p).is_file() for p in image.BUSYBOX),
        "vhost_net": (roots.dev / "vhost-net").exists(),
        "tun": (roots.dev / "net" / "tun").exists(),
        "kvm_probe": probe,
    }
