"""--vm-root 9p against --vm-root initramfs (issue 7): image size, build time, boot and receiver start-up.

    .venv/bin/python benchmarks/vm/vm_root_bench.py [--repeats 3] [--count 200] [--results /tmp/vm-root-bench]

Builds each image once into a fresh cache (timed), then boots the guests in
interleaved order (9p, initramfs, initramfs+gzip, 9p, ...) under TCG, and for
each boot measures: QEMU start to the agent's boot event, QEMU start to the
guest receiver's ready line (its imports: numpy and latscope's probe), and the
receiver's own start (spawn to ready). The guests boot with ``loglevel=7`` so
that their console tells, in guest uptime, how long the kernel took to unpack
the initramfs and when it started /init (the same for every variant). Prints
a Markdown table (medians and ranges) for BENCHMARKS.md, with the machine's
load average.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from latscope.probe.config import MeasureConfig
from latscope.remote import host
from latscope.session import measure_all
from latscope.store.layout import ResultsStore
from latscope.topo.vm import image as img
from latscope.topo.vm.guest import running_guest
from latscope.topo.vm.options import VmOptions
from latscope.topo.vm.topology import vm_path

VARIANTS = (("9p", "9p", False), ("initramfs", "initramfs", False), ("initramfs+gzip", "initramfs", True))
_ready_at: list[int] = []


def _stamp_ready(orig):
    @functools.wraps(orig)
    def wait_ready(self, timeout_s):
        port = orig(self, timeout_s)
        _ready_at.append(time.clock_gettime_ns(time.CLOCK_REALTIME))
        return port
    return wait_ready


def kernel_times(console: Path) -> tuple[float, float]:
    """(seconds the kernel spent unpacking the initramfs, guest uptime at "Run /init"), from the console."""
    stamps = {}
    for line in console.read_text(errors="replace").splitlines():
        m = re.match(r"^\[\s*(\d+\.\d+)\] (Trying to unpack rootfs|Freeing initrd memory|Run /init)", line)
        if m:
            stamps[m.group(2)] = float(m.group(1))
    unpack = stamps.get("Freeing initrd memory", float("nan")) - stamps.get("Trying to unpack rootfs", float("nan"))
    return unpack, stamps.get("Run /init", float("nan"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default="/tmp/vm-root-bench")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--count", type=int, default=200)
    args = ap.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="latscope-root-bench-"))
    os.environ["LATSCOPE_CACHE"] = str(cache)
    host.RemoteWorker.wait_ready = _stamp_ready(host.RemoteWorker.wait_ready)
    orig_image = img.guest_image
    store = ResultsStore(Path(args.results))
    try:
        kernel = img.find_kernel()
        t0 = time.monotonic()
        img.guest_image(kernel, root="9p")  # the shared vmlinux, then the 9p initramfs
        builds = {"9p": time.monotonic() - t0}
        for name, root, gz in VARIANTS[1:]:
            t0 = time.monotonic()
            image = img.guest_image(kernel, root=root, compress=gz)
            builds[name] = time.monotonic() - t0
        sizes = {}
        for name, root, gz in VARIANTS:
            image = img.guest_image(kernel, root=root, compress=gz)
            sizes[name] = (image.initrd_bytes, image.contents.get("unpacked_bytes", image.initrd_bytes))
        rows: dict[str, list[tuple[float, ...]]] = {n: [] for n, _, _ in VARIANTS}
        for _ in range(args.repeats):
            for name, root, gz in VARIANTS:
                img.guest_image = functools.partial(orig_image, compress=gz)
                opts = VmOptions(accel="tcg", root=root, clock_samples=50, append="loglevel=7")
                with running_guest(opts) as guest:
                    _ready_at.clear()
                    measure_all(MeasureConfig(topology="vm", count=args.count, tags=("vm-root-bench", name)),
                                store, path=vm_path(guest))
                    rows[name].append((*kernel_times(guest.qemu.spec.console), guest.boot_s,
                                       (_ready_at[0] - guest.started_ns) / 1e9, guest.ready_s[0]))
                img.guest_image = orig_image
        load = os.getloadavg()
        print(f"### --vm-root: image and start-up under TCG ({args.repeats} interleaved boots each; "
              f"load average {load[0]:.1f} at the end)\n")
        print("| root | initrd MB (unpacked) | build s | kernel unpacks initramfs s | /init at uptime s | QEMU start "
              "-> agent boot s | QEMU start -> receiver ready s | receiver spawn -> ready s |")
        print("|---|---|---|---|---|---|---|---|")
        for name, _, _ in VARIANTS:
            b, u = sizes[name]
            cols = []
            for k in range(5):
                xs = [r[k] for r in rows[name]]
                cols.append(f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})")
            print(f"| {name} | {b / 1e6:.1f} ({u / 1e6:.1f}) | {builds[name]:.1f} | " + " | ".join(cols) + " |")
    finally:
        img.guest_image = orig_image
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
