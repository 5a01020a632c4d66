"""`latscope run`: sender and receiver across a topology, one command, one stored run."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import click

from latscope.cli.common import (
    DURATION,
    INT_OR_HEX,
    NAME,
    TAG,
    check_memory,
    emit_json,
    json_option,
    results_option,
    stderr_is_tty,
    store_from,
    tag_list,
    warn,
)
from latscope.cli.progress import packet_progress
from latscope.errors import ConfigError, PrivilegeError
from latscope.privileges import CAP_SYS_ADMIN, can_build_namespaces, effective_caps
from latscope.probe import wire
from latscope.probe.config import MAX_CPU_DMA_LATENCY_US, MeasureConfig
from latscope.probe.spec import DEFAULT_ETHERTYPE, DEFAULT_PORT
from latscope.report.document import run_document
from latscope.report.text import context_lines, summary_text
from latscope.safetext import quote
from latscope.topo.available import TOPOLOGIES, available

#: Memory a run holds per packet at its peak: both halves' columns, the merged columns and the summary's copies.
RUN_BYTES_PER_PACKET = 600
CAP_DAC_OVERRIDE = 1


def probe_options(f):
    """Options of the packet stream, shared by `run` and `send`."""
    for opt in reversed([
        click.option("--period", type=DURATION, default="1ms", show_default=True, help="Interval between packets."),
        click.option("--count", type=click.IntRange(1), default=None, help="Packets to send [default: 60000]."),
        click.option("--duration", type=DURATION, default=None, help="Run length instead of --count (60s, 5m)."),
        click.option("--size", type=int, default=None,
                     help=f"Payload bytes (UDP payload or Ethernet payload), {wire.MIN_SIZE}..{wire.MAX_SIZE} "
                          f"(at most 1500 with --l2) [default and least: {wire.MIN_SIZE}; {wire.MIN_SIZE_MAC} "
                          "with --key-file]."),
        click.option("--spin", type=DURATION, default="0", help="Busy-wait this long before each deadline (50us)."),
        click.option("--base-time", "base_time", default=None,
                     help="Absolute start (CLOCK_REALTIME seconds, e.g. 1795605691.5); default: next whole period."),
        click.option("--ipv6", is_flag=True, help="UDP over IPv6."),
        click.option("--l2", is_flag=True, help="Raw Ethernet frames (AF_PACKET) instead of UDP."),
        click.option("--ethertype", type=INT_OR_HEX, default=DEFAULT_ETHERTYPE, show_default="0x88b5",
                     help="EtherType of --l2 frames."),
        click.option("--vid", type=int, default=None, help="802.1Q VLAN id of --l2 frames."),
        click.option("--pcp", type=int, default=None, help="802.1Q priority (PCP) of --l2 frames."),
        click.option("--port", type=int, default=None,
                     help=f"UDP port [default: {DEFAULT_PORT}; any free port on loopback]."),
        click.option("--tos", type=INT_OR_HEX, default=None, help="IP TOS / traffic class byte."),
        click.option("--so-priority", "so_priority", type=int, default=None, help="SO_PRIORITY of the socket."),
        click.option("--txtime", type=DURATION, default=None,
                     help="SO_TXTIME launch time = scheduled time + this offset (needs the ETF qdisc)."),
        click.option("--no-mlock", "no_mlock", is_flag=True, help="Do not lock memory (mlockall)."),
        click.option("--no-hw-timestamps", "no_hw", is_flag=True,
                     help="Leave NICs' hardware timestamping alone (default: switch it on where a device has it)."),
        click.option("--stream-log", "stream_log", is_flag=True,
                     help="Write a line per packet during the run (costs latency; for comparison only)."),
        click.option("--key-file", "key_file", default=None, metavar="FILE",
                     help="Authenticate every packet with the secret in FILE (HMAC-SHA256; the receiver needs "
                          "the same file; not readable by other users)."),
    ]):
        f = opt(f)
    return f


def resolve_count(count: int | None, duration: int | None, period: int) -> int:
    """--count, or --duration / --period, or the default of one minute at 1 kHz."""
    if count is not None and duration is not None:
        raise ConfigError("give --count or --duration, not both")
    if duration is not None:
        if duration < period:
            raise ConfigError("--duration is shorter than one --period")
        return duration // period
    return count if count is not None else 60_000


def key_path(key_file: str | None) -> str | None:
    """--key-file as an absolute path: the workers read it, and run.json records where it was."""
    return os.path.abspath(key_file) if key_file else None


def resolve_size(size: int | None, key_file: str | None) -> int:
    """--size, or the smallest packet: the header, and the MAC with --key-file."""
    if size is not None:
        return size
    return wire.MIN_SIZE_MAC if key_file is not None else wire.HEADER_SIZE


#: How far ahead --base-time may be: a start tomorrow is plausible, one in 3 million years a typo.
MAX_BASE_AHEAD_NS = 86_400 * 1_000_000_000


def parse_base_time(text: str | None, now_ns: int | None = None) -> int | None:
    """--base-time in seconds since the epoch (decimals allowed) or nanoseconds; in the next 24 hours."""
    if text is None:
        return None
    value = None
    if len(text) <= 40:
        try:
            value = int(text) if text.isdigit() and len(text) > 12 else float(text) * 1e9
        except ValueError:
            pass
    if value is None or not math.isfinite(value):
        raise ConfigError(f"--base-time {quote(text)}: expected seconds since the epoch, e.g. 1795605691.5")
    now = time.clock_gettime_ns(time.CLOCK_REALTIME) if now_ns is None else now_ns
    if value <= now:
        raise ConfigError("--base-time is in the past")
    if value > now + MAX_BASE_AHEAD_NS:
        raise ConfigError(f"--base-time {quote(text)} is more than 24 hours ahead")
    return round(value)


def family_of(ipv6: bool, l2: bool) -> str:
    if ipv6 and l2:
        raise ConfigError("--ipv6 and --l2 exclude each other")
    return "packet" if l2 else "inet6" if ipv6 else "inet"


def vm_options(f):
    """Options of the VM topology (`--topology vm[:bridge|macvtap]`)."""
    for opt in reversed([
        click.option("--direction", type=click.Choice(["forward", "reverse", "both"]), default="forward",
                     show_default=True, help="On a VM: host -> guest (forward), guest -> host, or both at once; "
                                             "between agents: --from -> --to (forward), back, or both at once."),
        click.option("--vm-accel", "vm_accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto",
                     show_default=True, help="QEMU accelerator (auto: KVM only when a probe boot succeeds)."),
        click.option("--vm-cpus", "vm_cpus", type=click.IntRange(1, 8), default=1, show_default=True,
                     help="Guest vCPUs."),
        click.option("--vm-mem", "vm_mem", type=click.IntRange(256, 16384), default=1024, show_default=True,
                     metavar="MIB", help="Guest memory in MiB."),
        click.option("--vm-iothread", "vm_iothread", is_flag=True,
                     help="Give the guest's disk a QEMU IO thread (IO io0), as --vm-cwd ext4/ext2 use it."),
        click.option("--vm-cpu-affinity", "vm_affinity", default=None, metavar="SPEC",
                     help="Pin QEMU threads: vcpu=1,io=1,main=0 (CPU lists: 0-1, 0+2)."),
        click.option("--vm-cwd", "vm_cwd", type=click.Choice(["tmpfs", "9p", "ext4", "ext2"]), default="tmpfs",
                     show_default=True, help="Where the guest's workers run and write --stream-log."),
        click.option("--vm-root", "vm_root", type=click.Choice(["9p", "initramfs"]), default="9p", show_default=True,
                     help="The guest's root: the host's, read-only over 9p under a tmpfs overlay; or none, "
                          "latscope and its Python in a self-contained initramfs (built once, cached)."),
        click.option("--vm-boot-timeout", "vm_boot_timeout", type=DURATION, default="180s", show_default=True,
                     help="Give up when the guest's agent has not answered by then."),
        click.option("--vm-append", "vm_append", default="", metavar="ARGS",
                     help="More guest kernel command line, e.g. isolcpus=0."),
        click.option("--vm-disk-load", "vm_disk_load", default="0", metavar="RATE",
                     help="During the run, write to the guest's --vm-cwd at RATE bytes/s (1M, 512K) with an fsync "
                          "every 32 KiB, as a logging application would (the seed's guest block I/O)."),
    ]):
        f = opt(f)
    return f


@dataclass(frozen=True)
class RunArgs:
    """`latscope run`'s options as click parsed them (one typed record instead of 40 parameters)."""

    topology: str | None
    dest: str | None
    from_host: str | None
    to_host: str | None
    period: int
    count: int | None
    duration: int | None
    size: int | None
    spin: int
    base_time: str | None
    ipv6: bool
    l2: bool
    ethertype: int
    vid: int | None
    pcp: int | None
    port: int | None
    tos: int | None
    so_priority: int | None
    txtime: int | None
    no_mlock: bool
    no_hw: bool
    stream_log: bool
    key_file: str | None
    direction: str
    vm_accel: str
    vm_cpus: int
    vm_mem: int
    vm_iothread: bool
    vm_affinity: str | None
    vm_cwd: str
    vm_root: str
    vm_boot_timeout: int
    vm_append: str
    vm_disk_load: str
    cpu_send: int | None
    cpu_recv: int | None
    prio_send: int | None
    prio_recv: int | None
    cpu_dma_latency: int | None
    name: str
    tags: tuple[str, ...]
    trace: bool
    trace_events: str | None
    stress: tuple[str, ...]
    log_dir: str | None
    log_fs: str | None
    results: str | None
    as_json: bool
    quiet: bool
    mode: str = "oneway"
    require_sync: int | None = None

    def config(self, topology: str) -> MeasureConfig:
        key_file = key_path(self.key_file)
        return MeasureConfig(
            topology=topology, family=family_of(self.ipv6, self.l2), period_ns=self.period,
            count=resolve_count(self.count, self.duration, self.period), size=resolve_size(self.size, key_file),
            spin_ns=self.spin,
            base_time_ns=parse_base_time(self.base_time), port=self.port, dest=self.dest,
            ethertype=self.ethertype, vid=self.vid, pcp=self.pcp, tos=self.tos, so_priority=self.so_priority,
            txtime_offset_ns=self.txtime, cpu_send=self.cpu_send, cpu_recv=self.cpu_recv,
            prio_send=self.prio_send, prio_recv=self.prio_recv, mlock=not self.no_mlock,
            hw_timestamps=not self.no_hw, cpu_dma_latency_us=self.cpu_dma_latency, stream_log=self.stream_log,
            name=self.name, tags=tuple(self.tags), direction=self.direction, key_file=key_file,
            mode=self.mode, require_sync_ns=self.require_sync,
        )

    def vm(self, topology: str) -> Any:
        from latscope.topo.vm.options import VmOptions, parse_topology

        _kind, variant = parse_topology(topology)
        return VmOptions(variant=variant or "bridge", accel=self.vm_accel, cpus=self.vm_cpus, mem_mb=self.vm_mem,
                         iothread=self.vm_iothread, affinity=self.vm_affinity, cwd=self.vm_cwd,
                         root=self.vm_root, boot_timeout_s=self.vm_boot_timeout / 1e9,
                         append=self.vm_append)


@click.command()
@click.option("--topology", type=click.Choice(list(TOPOLOGIES)), default=None,
              help="Path under test [default: veth as root, else loopback]; bridge, macvlan, vxlan, xdp: other "
                   "host paths between namespaces (docs/run.md); vm: a QEMU guest on a bridge (vm:macvtap: on a "
                   "macvtap); one this machine cannot build (ovs without the openvswitch module) is refused.")
@click.option("--dest", default=None, help="HOST:PORT of the receiver for --topology none.")
@click.option("--from", "from_host", default=None, metavar="HOST[:PORT]|local",
              help="Between two hosts: the sending side, a `latscope agent` (port default 48501) or local (this "
                   "host); with --to and --key-file (docs/agent.md).")
@click.option("--to", "to_host", default=None, metavar="HOST[:PORT]|local",
              help="Between two hosts: the receiving side, an agent or local.")
@click.option("--mode", type=click.Choice(["oneway", "rtt"]), default="oneway", show_default=True,
              help="oneway: a receiver stamps each arrival; rtt: a reflector echoes each packet with its kernel "
                   "RX and TX times (round trips, no synchronised clocks needed; UDP only).")
@click.option("--require-sync", "require_sync", type=DURATION, default=None, metavar="DURATION",
              help="One-way runs: refuse to measure (exit 1) when the clock checks bound the error between the "
                   "two ends' clocks above DURATION (e.g. 10us) or cannot bound it.")
@probe_options
@vm_options
@click.option("--cpu-send", "cpu_send", type=int, default=None, help="Pin the sender to this CPU.")
@click.option("--cpu-recv", "cpu_recv", type=int, default=None, help="Pin the receiver to this CPU.")
@click.option("--prio-send", "prio_send", type=int, default=None, help="SCHED_FIFO priority of the sender.")
@click.option("--prio-recv", "prio_recv", type=int, default=None, help="SCHED_FIFO priority of the receiver.")
@click.option("--cpu-dma-latency", "cpu_dma_latency", type=click.IntRange(0, MAX_CPU_DMA_LATENCY_US), default=None,
              metavar="US",
              help="Hold /dev/cpu_dma_latency at US microseconds during the run (0: no deep C-states).")
@click.option("--name", type=NAME, default="", help="A name for the run (show and compare accept it).")
@click.option("--tag", "tags", type=TAG, multiple=True, callback=tag_list,
              help="A tag (repeatable), e.g. --tag bridge --tag stress.")
@click.option("--trace", "trace", is_flag=True,
              help="Record kernel events during the run (for `latscope breakdown`; needs root).")
@click.option("--trace-events", "trace_events", default=None, metavar="CHANGES",
              help="Add or remove traced events: +GROUP[:EVENT],-GROUP[:EVENT] (e.g. -block,+kvm:kvm_exit).")
@click.option("--stress", "stress", multiple=True, metavar="KIND[:ITEMS]",
              help="A load during the run (repeatable): net[:udp|tcp,streams=N,rate=R,size=B] (iperf3 on the "
                   "probe's path), io[:dir=PATH,bs=,size=,rate=] (fio), cpu[:workers=N,cpus=0-1] or "
                   "vm[:workers=N,cpus=,bytes=] (stress-ng); see docs/stress.md.")
@click.option("--log-dir", "log_dir", default=None, metavar="DIR",
              help="With --stream-log: write the logs into DIR during the run (moved into the run afterwards).")
@click.option("--log-fs", "log_fs", type=click.Choice(["tmpfs", "ext2", "ext4"]), default=None,
              help="With --stream-log: write the logs to a file system made for the run (on --log-dir DIR, "
                   "else a scratch directory), removed afterwards.")
@results_option
@json_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def run(ctx: click.Context, **kwargs: Any) -> None:
    """Measure one-way latency (or round trips, --mode rtt): a periodic packet stream across a topology, saved as a run."""
    from latscope.env.steal import StealCapture
    from latscope.experiment.runopts import experiment
    from latscope.session import measure_all

    args = RunArgs(**kwargs)
    cfg, vm = prepare(args)
    store = store_from(args.results)
    notify = None if args.quiet or not stderr_is_tty() else (lambda text: click.echo(f"latscope: {text}", err=True))
    exp = experiment(args.stress, args.log_dir, args.log_fs, cfg) if args.stress or args.log_dir or args.log_fs \
        else None
    # Host steal is sampled in every run; it starts first, so it covers the trace's whole window.
    captures = (StealCapture(),) + (exp.captures if exp else ()) + trace_captures(args.trace, args.trace_events, cfg, args.quiet) + \
        disk_load(args.vm_disk_load, cfg)
    with packet_progress(cfg.count, cfg.duration_ns / 1e9, args.quiet) as on_progress:
        if cfg.topology == "agents":
            from latscope.orchestrate import measure_between

            assert args.from_host is not None and args.to_host is not None
            outcomes = measure_between(cfg, store, args.from_host, args.to_host, on_progress=on_progress,
                                       notify=notify)
        else:
            outcomes = measure_all(cfg, store, on_progress=on_progress, vm=vm, notify=notify, captures=captures)
    for problem in exp.logfs.problems if exp and exp.logfs else []:
        warn(problem)
    for outcome in outcomes:
        for w in outcome.warnings:
            warn(w)
    if args.as_json:
        docs = [run_document(o.run, o.summary) for o in outcomes]
        emit_json(docs[0] if len(docs) == 1 else {"runs": docs})
    else:
        click.echo("\n\n".join(summary_text(o.summary, o.run.run_id, o.run.record.status,
                                             context_lines(o.run.record)) for o in outcomes))
    interrupted = [o for o in outcomes if o.interrupted]
    for o in interrupted:
        packets = o.summary["packets"]
        warn(f"run interrupted ({o.stop_reason}); stored as {o.run.run_id}: "
             f"sent {packets['sent']}, received {packets['received']}")
    if interrupted:
        ctx.exit(1)


def prepare(args: RunArgs) -> tuple[MeasureConfig, Any]:
    """Every check of a run's options that needs no set-up: the run's config and VM options, or an error.

    `run` calls it first; `campaign plan` calls it for every cell, so that an impossible level is refused
    before the first run.
    """
    if args.from_host is not None or args.to_host is not None:
        return prepare_agents(args), None
    root = can_build_namespaces()
    topology = args.topology
    if topology is None:
        topology = "none" if args.dest else ("veth" if root else "loopback")
    if topology != "loopback" and topology != "none" and not root:
        raise PrivilegeError(f"--topology {topology} needs root (network namespaces); "
                             "run as root or use --topology loopback")
    refused = available(topology)
    if refused:
        raise ConfigError(f"--topology {topology}: {refused}")
    cfg = args.config(topology)
    check_memory(cfg.count, RUN_BYTES_PER_PACKET)
    vm = args.vm(topology) if topology.startswith("vm") else None
    check_vm_args(args, cfg, vm)
    if args.trace or args.trace_events is not None:
        from latscope.trace.events import resolve

        resolve(args.trace_events)
    disk_load(args.vm_disk_load, cfg)
    if args.stress or args.log_dir or args.log_fs:
        from latscope.experiment.runopts import check

        check(args.stress, args.log_dir, args.log_fs, cfg)
    return cfg, vm


def prepare_agents(args: RunArgs) -> MeasureConfig:
    """`run --from A --to B`: the checks of prepare() for a run between agents (nothing is built here)."""
    from latscope.orchestrate import check_agents

    given = [opt for opt, on in (("--topology", args.topology is not None), ("--dest", args.dest is not None),
                                 ("--trace", args.trace), ("--trace-events", args.trace_events is not None),
                                 ("--stress", bool(args.stress)), ("--log-dir", args.log_dir is not None),
                                 ("--log-fs", args.log_fs is not None),
                                 ("--cpu-dma-latency", args.cpu_dma_latency is not None))
             if on]
    given += ["--" + k.replace("_", "-").replace("vm-affinity", "vm-cpu-affinity")
              for k, default in VM_DEFAULTS.items() if getattr(args, k) != default]
    if given:
        raise ConfigError(f"{', '.join(given)}: not with --from/--to (a run between agents)")
    if args.key_file is None:
        raise ConfigError("--from/--to need --key-file: agents serve only controllers that prove the key")
    cfg = args.config("agents")
    check_agents(cfg, args.from_host, args.to_host)
    check_memory(cfg.count, RUN_BYTES_PER_PACKET)
    return cfg


#: --vm-* options and their defaults: given without a VM topology they would be silently ignored.
VM_DEFAULTS = {"vm_accel": "auto", "vm_cpus": 1, "vm_mem": 1024, "vm_iothread": False, "vm_affinity": None,
               "vm_cwd": "tmpfs", "vm_root": "9p", "vm_boot_timeout": 180_000_000_000, "vm_append": "",
               "vm_disk_load": "0"}


def check_vm_args(args: RunArgs, cfg: MeasureConfig, vm: Any) -> None:
    """VM options only with a VM topology; CPUs of each half checked against the side it runs on, before boot."""
    if vm is None:
        given = [k for k, default in VM_DEFAULTS.items() if getattr(args, k) != default]
        if given:
            names = ", ".join("--" + k.replace("_", "-").replace("vm-affinity", "vm-cpu-affinity") for k in given)
            raise ConfigError(f"{names}: only for --topology vm (this run's topology is {cfg.topology})")
        return
    import os

    host_cpus = len(os.sched_getaffinity(0))
    sides = {"forward": (("--cpu-send", cfg.cpu_send, host_cpus), ("--cpu-recv", cfg.cpu_recv, vm.cpus)),
             "reverse": (("--cpu-send", cfg.cpu_send, vm.cpus), ("--cpu-recv", cfg.cpu_recv, host_cpus))}
    checks = sides["forward"] if cfg.direction == "forward" else sides["reverse"] if cfg.direction == "reverse" \
        else tuple((o, c, min(host_cpus, vm.cpus)) for o, c, _n in sides["forward"])
    for opt, cpu, n in checks:
        if cpu is not None and not 0 <= cpu < n:
            raise ConfigError(f"{opt} {cpu}: that half has CPUs 0..{n - 1} (host {host_cpus}, guest {vm.cpus})")


#: How long a traced VM run records before its stream starts (boot is before the trace starts; the guest's
#: receiver, a fork of the warmed-up agent, is listening within seconds).
VM_TRACE_LEAD_NS = 15_000_000_000


def disk_load(rate_text: str, cfg: MeasureConfig) -> tuple:
    """--vm-disk-load: a paced, bounded writer in the guest for the run's duration (and a minute more)."""
    text = rate_text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    try:
        rate = int(float(text[:-1] if scale > 1 else text) * scale)
    except ValueError:
        raise ConfigError(f"--vm-disk-load {rate_text!r}: expected bytes per second such as 1M or 512K") from None
    if rate == 0:
        return ()
    if not 4096 <= rate <= 1 << 30:
        raise ConfigError("--vm-disk-load must be between 4K and 1G bytes per second (0: off)")
    from latscope.remote.guestload import GuestDiskLoad

    return (GuestDiskLoad(max_bytes=1 << 30, max_s=min(600.0, cfg.duration_ns / 1e9 + 60), block=16 << 10,
                          sync_every=2, rate=rate),)


def trace_captures(trace: bool, trace_events: str | None, cfg: MeasureConfig, quiet: bool = False) -> tuple:
    """The kernel-trace capture when --trace (or --trace-events) was given."""
    if not trace and trace_events is None:
        return ()
    # Writing tracefs takes root's file access and CAP_SYS_ADMIN (to mount it where it is absent).
    caps = effective_caps()
    if not caps & (1 << CAP_SYS_ADMIN) or not (caps & (1 << CAP_DAC_OVERRIDE) or os.geteuid() == 0):
        raise PrivilegeError("--trace needs root (it records into a tracefs instance); run as root, or without "
                             "--trace")
    from latscope.cli.common import stderr_is_tty
    from latscope.trace.capture import TraceCapture
    from latscope.trace.events import resolve

    resolve(trace_events)  # a bad --trace-events fails before anything is set up
    pinned = (cfg.cpu_send, cfg.cpu_recv)
    probe_cpus = tuple(c for c in pinned if c is not None) if all(c is not None for c in pinned) else None
    notify = None if quiet or not stderr_is_tty() else (lambda text: click.echo(f"latscope: {text}", err=True))
    vm = cfg.topology.startswith("vm")
    # On a VM the host records from before the guest's receiver starts (tens of seconds under TCG) to the end.
    host = TraceCapture(count=cfg.count, duration_ns=cfg.duration_ns + (VM_TRACE_LEAD_NS if vm else 0),
                        event_changes=trace_events, probe_cpus=probe_cpus, notify=notify)
    if not vm:
        return (host,)
    from latscope.trace.guestcapture import GuestTraceCapture

    return (host, GuestTraceCapture(count=cfg.count, duration_ns=cfg.duration_ns, event_changes=trace_events,
                                    notify=notify))
