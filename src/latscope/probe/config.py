"""The user's measurement request, validated once, recorded in run.json as given."""

from __future__ import annotations

import os
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from latscope.errors import ConfigError
from latscope.probe import wire
from latscope.probe.auth import load_key
from latscope.probe.spec import DEFAULT_ETHERTYPE, DEFAULT_PORT
from latscope.safetext import check_name, check_tags
from latscope.units import MAX_DURATION_NS, format_duration

MIN_PERIOD_NS = 10_000
MAX_PERIOD_NS = 3600 * 1_000_000_000
MAX_COUNT = 1_000_000_000
#: The kernel's "no constraint" value of /dev/cpu_dma_latency (PM_QOS_CPU_LATENCY_DEFAULT_VALUE, 2000 s).
MAX_CPU_DMA_LATENCY_US = 2_000_000_000
#: Stream ids are 31-bit: samples.parquet stores them as int32.
MAX_STREAM = 2**31 - 1
MODES = ("oneway", "rtt")
#: The topology of `latscope send`: the receiver is another host's `latscope recv`, reached at the endpoint
#: given to the sender (an address, or a MAC with --l2); latscope builds nothing. `run` does not offer it.
REMOTE = "remote"


@dataclass(frozen=True)
class MeasureConfig:
    """Everything `latscope run` was asked to do."""

    topology: str = "veth"
    family: str = "inet"  # inet, inet6, packet
    period_ns: int = 1_000_000
    count: int = 60_000
    size: int = wire.HEADER_SIZE
    spin_ns: int = 0
    base_time_ns: int | None = None
    #: None: 48500 inside namespaces, any free port on loopback (runs side by side must not collide).
    port: int | None = None
    dest: str | None = None
    ethertype: int = DEFAULT_ETHERTYPE
    vid: int | None = None
    pcp: int | None = None
    tos: int | None = None
    so_priority: int | None = None
    txtime_offset_ns: int | None = None
    cpu_send: int | None = None
    cpu_recv: int | None = None
    prio_send: int | None = None
    prio_recv: int | None = None
    mlock: bool = True
    stream_log: bool = False
    hw_timestamps: bool = True
    #: Hold /dev/cpu_dma_latency at this many µs during the run (None: leave power management alone).
    cpu_dma_latency_us: int | None = None
    name: str = ""
    tags: tuple[str, ...] = ()
    stream: int = field(default_factory=lambda: secrets.randbits(31))
    #: On a VM: forward (host -> guest), reverse (guest -> host) or both at once; between agents: --from -> --to,
    #: --to -> --from, or both.
    direction: str = "forward"
    #: Authenticate every packet with the key in this file (the path is recorded, never the key).
    key_file: str | None = None
    #: oneway (a receiver stamps arrivals) or rtt (a reflector echoes every packet; docs/run.md).
    mode: str = "oneway"
    #: Refuse to measure one-way when the clock error bound is larger than this (None: measure anyway).
    require_sync_ns: int | None = None

    def __post_init__(self) -> None:
        validate(self)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["tags"] = list(self.tags)
        return doc

    @property
    def duration_ns(self) -> int:
        return self.period_ns * self.count


def validate(cfg: MeasureConfig) -> None:
    """Raise ConfigError for any value or combination that cannot work."""
    if cfg.family not in ("inet", "inet6", "packet"):
        raise ConfigError(f"unknown family {cfg.family!r}")
    if cfg.period_ns < MIN_PERIOD_NS:
        raise ConfigError(f"--period must be at least {MIN_PERIOD_NS // 1000}us, got {cfg.period_ns}ns")
    if cfg.period_ns > MAX_PERIOD_NS:
        raise ConfigError(f"--period must be at most 1h, got {format_duration(cfg.period_ns)}")
    if not 1 <= cfg.count <= MAX_COUNT:
        raise ConfigError(f"--count must be between 1 and {MAX_COUNT}, got {cfg.count}")
    if cfg.duration_ns > MAX_DURATION_NS:
        raise ConfigError(f"{cfg.count} packets every {format_duration(cfg.period_ns)} would take more than 366 days")
    if not wire.MIN_SIZE <= cfg.size <= wire.MAX_SIZE:
        raise ConfigError(f"--size must be between {wire.MIN_SIZE} and {wire.MAX_SIZE} bytes, got {cfg.size}")
    if cfg.key_file is not None:
        load_key(cfg.key_file)
        if cfg.size < wire.MIN_SIZE_MAC:
            raise ConfigError(f"--size must be at least {wire.MIN_SIZE_MAC} bytes with --key-file "
                              f"(the MAC takes {wire.MAC_SIZE}), got {cfg.size}")
    if not 0 <= cfg.stream <= MAX_STREAM:
        raise ConfigError(f"--stream must be 0..{MAX_STREAM}, got {cfg.stream}")
    if cfg.family == "packet" and cfg.size > 1500:
        raise ConfigError(f"--size {cfg.size} does not fit an Ethernet frame (at most 1500 bytes with --l2)")
    if cfg.spin_ns < 0 or cfg.spin_ns >= cfg.period_ns:
        raise ConfigError("--spin must be shorter than --period")
    if cfg.port is not None and not 1 <= cfg.port <= 65535:
        raise ConfigError(f"--port must be 1..65535, got {cfg.port}")
    if cfg.vid is not None and not 0 <= cfg.vid <= 4094:
        raise ConfigError(f"--vid must be 0..4094, got {cfg.vid}")
    if cfg.pcp is not None and not 0 <= cfg.pcp <= 7:
        raise ConfigError(f"--pcp must be 0..7, got {cfg.pcp}")
    if (cfg.vid is not None or cfg.pcp is not None) and cfg.family != "packet":
        raise ConfigError("--vid and --pcp need --l2 (raw Ethernet frames)")
    if not 0 <= cfg.ethertype <= 0xFFFF or cfg.ethertype < 0x0600:
        raise ConfigError(f"--ethertype must be 0x0600..0xffff, got 0x{cfg.ethertype:x}")
    if cfg.tos is not None and not 0 <= cfg.tos <= 255:
        raise ConfigError(f"--tos must be 0..255, got {cfg.tos}")
    if cfg.so_priority is not None and not 0 <= cfg.so_priority <= 0x7FFFFFFF:
        raise ConfigError(f"--so-priority must be 0..2147483647, got {cfg.so_priority}")
    if cfg.cpu_dma_latency_us is not None and not 0 <= cfg.cpu_dma_latency_us <= MAX_CPU_DMA_LATENCY_US:
        raise ConfigError(f"--cpu-dma-latency must be 0..{MAX_CPU_DMA_LATENCY_US} microseconds, "
                          f"got {cfg.cpu_dma_latency_us}")
    check_name(cfg.name)
    check_tags(cfg.tags)
    if cfg.direction not in ("forward", "reverse", "both"):
        raise ConfigError(f"--direction {cfg.direction}: choose forward, reverse or both")
    is_vm = cfg.topology == "vm" or cfg.topology.startswith("vm:")
    #: Between network agents (`run --from A --to B`): the halves run on other hosts, which check their CPUs.
    agents = cfg.topology == "agents"
    if cfg.direction != "forward" and not (is_vm or agents):
        raise ConfigError("--direction reverse/both needs a VM topology (--topology vm) or agents (--from/--to); "
                          "on one host the two directions are the same path")
    if agents and cfg.family == "packet":
        raise ConfigError("--l2 is not supported between agents yet: use UDP")
    if is_vm and cfg.family == "packet":
        raise ConfigError("--l2 is not supported on --topology vm yet: use UDP")
    if cfg.topology == "none" and not cfg.dest:
        raise ConfigError("--topology none needs --dest HOST:PORT")
    if cfg.topology != "none" and cfg.dest:
        raise ConfigError("--dest is only for --topology none (veth and loopback choose their own addresses)")
    if cfg.dest:
        host_and_port(cfg.dest, cfg.port, "--dest")  # a port in --dest and another --port: say so now
    if cfg.topology == "none" and cfg.family == "packet":
        raise ConfigError(
            "raw Ethernet over a real network needs two hosts: use `latscope recv --l2` and `latscope send --l2`"
        )
    if cfg.mode not in MODES:
        raise ConfigError(f"--mode {cfg.mode}: choose {' or '.join(MODES)}")
    if cfg.mode == "rtt":
        if cfg.family == "packet":
            raise ConfigError("--mode rtt works over UDP (the reflector answers the sender's address), not --l2")
        if is_vm:
            raise ConfigError("--mode rtt is not supported on --topology vm yet: the guest agent has no reflector")
        if cfg.txtime_offset_ns is not None:
            raise ConfigError("--txtime is for one-way runs; --mode rtt measures kernel to kernel")
        if cfg.require_sync_ns is not None:
            raise ConfigError("--require-sync is for one-way runs: round trips need no synchronised clocks")
    if cfg.require_sync_ns is not None and cfg.require_sync_ns <= 0:
        raise ConfigError("--require-sync must be a positive duration")
    ncpu = os.cpu_count() or 1
    # On a VM one half runs in the guest, whose CPUs the guest checks.
    for opt, cpu in (() if is_vm or agents else (("--cpu-send", cfg.cpu_send), ("--cpu-recv", cfg.cpu_recv))):
        if cpu is not None and not 0 <= cpu < ncpu:
            raise ConfigError(f"{opt} {cpu}: this machine has CPUs 0..{ncpu - 1}")
    for opt, prio in (("--prio-send", cfg.prio_send), ("--prio-recv", cfg.prio_recv)):
        if prio is not None and not 1 <= prio <= 99:
            raise ConfigError(f"{opt} must be 1..99 (SCHED_FIFO), got {prio}")


def split_hostport(text: str, option: str = "--dest") -> tuple[str, int | None]:
    """'host', 'host:port', '[v6]', '[v6]:port' or a bare IPv6 address -> (host, port or None)."""
    text = text.strip()
    port: str | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"invalid {option} {text!r}: expected HOST, HOST:PORT or [IPV6]:PORT")
        port = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text
    if not host:
        raise ConfigError(f"invalid {option} {text!r}: expected HOST, HOST:PORT or [IPV6]:PORT")
    if port is None:
        return host, None
    try:
        p = int(port)
    except ValueError:
        raise ConfigError(f"invalid port in {option} {text!r}") from None
    if not 1 <= p <= 65535:
        raise ConfigError(f"invalid port {p} in {option} {text!r}")
    return host, p


def host_and_port(text: str, port: int | None, option: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """The address and port of ``option`` (HOST, HOST:PORT, [V6]:PORT) together with ``--port`` (None: not given).

    Either may give the port, or both when they agree; ConfigError when they disagree.
    """
    host, given = split_hostport(text, option)
    if given is not None and port is not None and given != port:
        raise ConfigError(f"{option} {text} says port {given} but --port says {port}: give the port once")
    chosen = given if given is not None else port if port is not None else default_port
    if not 1 <= chosen <= 65535:
        raise ConfigError(f"--port must be 1..65535, got {chosen}")
    return host, chosen


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """'host', 'host:port', '[v6]:port' or 'v6addr' -> (host, port); ``default_port`` when the text has none."""
    host, port = split_hostport(text)
    return host, default_port if port is None else port
