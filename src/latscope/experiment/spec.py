"""``--stress KIND[:item,item,...]``: what load to run beside a measurement, validated before anything starts.

``parse_stress`` is pure (text in, ``StressSpec`` or a one-line ConfigError
naming the bad item out); ``check_tools`` looks for the programs on PATH and
``check_plan`` checks the specs against the rest of the run (topology, where
the logs go, this host's CPUs and memory). A campaign planner calls all three
to refuse a bad campaign file before its first run.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from latscope.errors import ConfigError
from latscope.safetext import quote

#: kind -> (program, Debian package).
TOOLS = {"net": ("iperf3", "iperf3"), "io": ("fio", "fio"), "cpu": ("stress-ng", "stress-ng"),
         "vm": ("stress-ng", "stress-ng")}
#: kind -> the items it takes (bare words end without '=').
ITEMS = {
    "net": ("udp", "tcp", "streams=", "rate=", "size="),
    "io": ("dir=", "bs=", "size=", "rate="),
    "cpu": ("workers=", "cpus="),
    "vm": ("workers=", "cpus=", "bytes="),
}
MAX_STREAMS = 16
#: All the iperf3 streams of one run, over every net spec.
MAX_STREAMS_TOTAL = 32
DEFAULT_NET_RATE = 100_000_000          # bits/s per stream
NET_RATE_BOUNDS = (1_000, 100_000_000_000)
NET_SIZE_BOUNDS = {"udp": (64, 65507), "tcp": (64, 1 << 20)}
DEFAULT_IO_BS = 4096
DEFAULT_IO_SIZE = 64 << 20
IO_BS_BOUNDS = (512, 16 << 20)
IO_SIZE_BOUNDS = (1 << 20, 64 << 30)
IO_RATE_BOUNDS = (4096, 10 << 30)     # bytes/s
MAX_WORKERS = 64
DEFAULT_VM_BYTES = 256 << 20
VM_BYTES_BOUNDS = (1 << 20, 64 << 30)
MAX_CPU = 4095
_MAX_TEXT = 200

_BIN = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_DEC = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_NUMBER = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)(?:I?B)?$")


@dataclass(frozen=True)
class StressSpec:
    """One ``--stress`` load, with every default filled in; ``text`` is the spec as given."""

    kind: str
    text: str
    protocol: str = "udp"
    streams: int = 1
    #: net: bits/s per stream; io: bytes/s (None: as fast as the writes and fsyncs go).
    rate: int | None = None
    #: net: payload bytes per write (None: iperf3's default); io: the size of the file written to.
    size: int | None = None
    bs: int = DEFAULT_IO_BS
    #: io: the directory written to (None: where the stream logs go, --log-dir/--log-fs).
    dir: str | None = None
    workers: int = 1
    #: cpu, vm: the CPUs the workers may run on (None: any), as a sorted tuple and as given.
    cpus: tuple[int, ...] | None = None
    cpus_text: str | None = None
    vm_bytes: int = DEFAULT_VM_BYTES

    @property
    def tool(self) -> str:
        return TOOLS[self.kind][0]

    @property
    def package(self) -> str:
        return TOOLS[self.kind][1]

    def options(self) -> dict[str, Any]:
        """The effective settings of this kind (run.json), defaults included."""
        if self.kind == "net":
            return {"protocol": self.protocol, "streams": self.streams, "rate_bps": self.rate,
                    "size_bytes": self.size}
        if self.kind == "io":
            return {"dir": self.dir, "bs_bytes": self.bs, "size_bytes": self.size, "rate_bytes_per_s": self.rate}
        doc: dict[str, Any] = {"workers": self.workers, "cpus": self.cpus_text}
        if self.kind == "vm":
            doc["bytes_per_worker"] = self.vm_bytes
        return doc


def parse_stress(text: str) -> StressSpec:
    """``KIND`` or ``KIND:item,item`` (item: ``key=value`` or a bare word) -> StressSpec; ConfigError if bad."""
    where = f"--stress {quote(text)}"
    if len(text) > _MAX_TEXT:
        raise ConfigError(f"{where}: longer than {_MAX_TEXT} characters")
    kind, _, rest = text.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in ITEMS:
        raise ConfigError(f"{where}: unknown kind {quote(kind)} (choose from {', '.join(ITEMS)})")
    items: dict[str, str | None] = {}
    for raw in rest.split(",") if rest.strip() else []:
        item = raw.strip()
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        name = key + ("=" if eq else "")
        if not item or name not in ITEMS[kind]:
            raise ConfigError(f"{where}: unknown item {quote(item)} ({kind} takes {', '.join(ITEMS[kind])})")
        slot = "protocol" if kind == "net" and key in ("udp", "tcp") else key
        if slot in items:
            raise ConfigError(f"{where}: {quote(item)} repeats {'udp/tcp' if slot == 'protocol' else key}")
        if eq and not value.strip():
            raise ConfigError(f"{where}: {quote(item)} has no value")
        items[slot] = key if slot == "protocol" else value.strip()
    return _build(kind, text, items, where)


def _build(kind: str, text: str, items: dict[str, str | None], where: str) -> StressSpec:
    def get(key: str) -> str | None:
        return items.get(key)

    if kind == "net":
        protocol = get("protocol") or "udp"
        streams = _int(get("streams"), 1, (1, MAX_STREAMS), f"{where}: streams=")
        rate = _number(get("rate"), _DEC, DEFAULT_NET_RATE, NET_RATE_BOUNDS, f"{where}: rate=", "bits/s")
        size = None if get("size") is None else \
            _number(get("size"), _BIN, 0, NET_SIZE_BOUNDS[protocol], f"{where}: size=", f"bytes ({protocol})")
        return StressSpec(kind, text, protocol=protocol, streams=streams, rate=rate, size=size)
    if kind == "io":
        bs = _number(get("bs"), _BIN, DEFAULT_IO_BS, IO_BS_BOUNDS, f"{where}: bs=", "bytes")
        size = _number(get("size"), _BIN, DEFAULT_IO_SIZE, IO_SIZE_BOUNDS, f"{where}: size=", "bytes")
        if size < bs:
            raise ConfigError(f"{where}: size= must be at least bs= ({bs} bytes)")
        io_rate = None if get("rate") is None else \
            _number(get("rate"), _BIN, 0, IO_RATE_BOUNDS, f"{where}: rate=", "bytes/s")
        return StressSpec(kind, text, rate=io_rate, size=size, bs=bs, dir=get("dir"))
    workers = _int(get("workers"), 1, (1, MAX_WORKERS), f"{where}: workers=")
    cpus_text = get("cpus")
    cpus = None if cpus_text is None else parse_cpu_list(cpus_text, f"{where}: cpus=")
    vm_bytes = _number(get("bytes"), _BIN, DEFAULT_VM_BYTES, VM_BYTES_BOUNDS, f"{where}: bytes=", "bytes") \
        if kind == "vm" else DEFAULT_VM_BYTES
    return StressSpec(kind, text, workers=workers, cpus=cpus, cpus_text=cpus_text, vm_bytes=vm_bytes)


def _int(text: str | None, default: int, bounds: tuple[int, int], what: str) -> int:
    if text is None:
        return default
    if not text.isdigit() or len(text) > 9:
        raise ConfigError(f"{what}{quote(text)}: expected a whole number {bounds[0]}..{bounds[1]}")
    value = int(text)
    if not bounds[0] <= value <= bounds[1]:
        raise ConfigError(f"{what}{value}: must be {bounds[0]}..{bounds[1]}")
    return value


def _number(text: str | None, scale: dict[str, int], default: int, bounds: tuple[int, int], what: str,
            unit: str) -> int:
    """A number with an optional K/M/G/T suffix (``scale`` says binary or decimal), within ``bounds``."""
    if text is None:
        return default
    m = _NUMBER.match(text.strip().upper()) if len(text) <= 24 else None
    if not m:
        raise ConfigError(f"{what}{quote(text)}: expected a number with an optional K, M or G suffix")
    value = int(float(m.group(1)) * scale[m.group(2)])
    if not bounds[0] <= value <= bounds[1]:
        raise ConfigError(f"{what}{text}: must be {bounds[0]}..{bounds[1]} {unit}")
    return value


def parse_cpu_list(text: str, what: str = "cpus=") -> tuple[int, ...]:
    """``0-1``, ``0,2``, ``0-3+6`` (``+`` as well as ``,``, since items are comma-separated) -> sorted CPUs."""
    out: set[int] = set()
    for part in text.split("+") if text else [""]:
        lo, dash, hi = part.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()) or len(part) > 11:
            raise ConfigError(f"{what}{quote(text)}: expected CPU numbers and ranges such as 0-1 or 0+2")
        a, b = int(lo), int(hi) if dash else int(lo)
        if a > b or b > MAX_CPU:
            raise ConfigError(f"{what}{quote(text)}: bad range {quote(part)}")
        out.update(range(a, b + 1))
    return tuple(sorted(out))


def parse_all(texts: Iterable[str]) -> tuple[StressSpec, ...]:
    """Every ``--stress`` of a run; also refuses more iperf3 streams than a run may have."""
    specs = tuple(parse_stress(t) for t in texts)
    total = sum(s.streams for s in specs if s.kind == "net")
    if total > MAX_STREAMS_TOTAL:
        raise ConfigError(f"--stress net: {total} streams in all; a run may have at most {MAX_STREAMS_TOTAL}")
    return specs


def check_tools(specs: Sequence[StressSpec], which: Any = shutil.which) -> None:
    """Every program the specs need is on PATH; else a one-line ConfigError naming its Debian package."""
    for spec in specs:
        if which(spec.tool) is None:
            raise ConfigError(f"--stress {spec.kind} needs {spec.tool}, which is not installed "
                              f"(Debian package {spec.package}: apt-get install {spec.package})")


def check_plan(specs: Sequence[StressSpec], *, topology: str, log_target: bool, ncpus: int | None = None,
               mem_total: int | None = None) -> None:
    """The specs fit this run: a path for net, a directory for io, CPUs and memory that exist.

    ``log_target``: the run writes its stream logs to --log-dir or --log-fs (io's default directory).
    ``ncpus`` and ``mem_total`` default to this host's.
    """
    is_vm = topology == "vm" or topology.startswith("vm:")
    for spec in specs:
        where = f"--stress {quote(spec.text)}"
        if spec.kind == "net" and topology == "none":
            raise ConfigError(f"{where}: net floods the path of a topology latscope builds; with --topology none "
                              "the far end is not latscope's (run iperf3 there by hand)")
        if spec.kind == "net" and is_vm:
            raise ConfigError(f"{where}: net is not supported on --topology vm yet (the guest has no iperf3)")
        if spec.kind == "io" and spec.dir is None and not log_target:
            raise ConfigError(f"{where}: io needs dir=PATH or --log-fs (or --log-dir): where should fio write?")
        if spec.kind == "io" and spec.dir is not None and "\\" in spec.dir:
            raise ConfigError(f"{where}: dir= with a backslash: fio reads '\\:' in a file name as an escape")
        if spec.kind == "io" and spec.dir is not None and not os.path.isdir(spec.dir):
            raise ConfigError(f"{where}: dir={spec.dir} is not a directory")
        if spec.cpus is not None:
            n = ncpus if ncpus is not None else os.cpu_count() or 1
            if spec.cpus[-1] >= n:
                raise ConfigError(f"{where}: cpus={spec.cpus_text}: this machine has CPUs 0..{n - 1}")
    vm_bytes = sum(s.workers * s.vm_bytes for s in specs if s.kind == "vm")
    if vm_bytes:
        total = mem_total if mem_total is not None else _mem_total()
        if total and vm_bytes > total // 2:
            raise ConfigError(f"--stress vm: {vm_bytes >> 20} MiB in all is more than half this machine's memory "
                              f"({total >> 20} MiB)")


def _mem_total() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
