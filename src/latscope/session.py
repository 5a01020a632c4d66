"""A measurement from request to stored run: topology, workers, merge, store.

This is the core behind `latscope run`, `recv` and `send`. It never prints;
progress goes to a callback and the outcome is returned.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from latscope import privileges, testhooks
from latscope.analysis import clockbound
from latscope.analysis.summary import summarise
from latscope.env import collect_environment
from latscope.errors import CaptureError, CheckFailed, ConfigError, error_from
from latscope.leftovers import reap
from latscope.probe import controller, ending, rt, rttjoin
from latscope.probe.config import MeasureConfig, parse_hostport
from latscope.probe.spec import (
    DEFAULT_PORT,
    Endpoint,
    ReceiverSpec,
    ReflectorSpec,
    SenderSpec,
    to_json,
)
from latscope.store.layout import ResultsStore, StoredRun, new_run_id
from latscope.store.runfile import RunRecord
from latscope.store.samples import Samples
from latscope.topo import Side, TopologyPath, open_topology

ProgressFn = Callable[[int, int, int], None]
BYTES_PER_PACKET = 400
#: The workers' result files per packet: the sender's 6 and the receiver's 9 int64 columns.
WORKER_BYTES_PER_PACKET = 120
SHM = Path("/dev/shm")
RECEIVER_GRACE_S = 5.0
#: An emulated guest's receiver may still be working through a backlog when the sender is done.
RECEIVER_GRACE_GUEST_S = 30.0
READY_TIMEOUT_S = 20.0
#: A receiver in an emulated guest imports numpy and latscope's probe at a fraction of native speed.
READY_TIMEOUT_GUEST_S = 180.0


class Capture(Protocol):
    """Something recorded alongside the probe (kernel traces): started before, stopped after."""

    def start(self, workdir: Path, path: TopologyPath) -> dict[str, Any]:
        """Begin recording; return extra worker spec fields (``trace_marker``; ``stream_logs``: role -> path)."""

    def stop(self, workdir: Path) -> dict[str, Any]:
        """Stop recording, leave files in ``workdir``; return {'record': {...}, 'completeness': {...}} and
        optionally 'config': {...} (settings to record in run.json's config) and 'summary': {...} (keys
        added to the run's summary)."""

    def close(self) -> None:
        """Release everything (also after errors); must be safe to call twice. Captures close in reverse order."""


@dataclass(frozen=True)
class Outcome:
    """What a measurement produced."""

    run: StoredRun
    summary: dict[str, Any]
    interrupted: bool
    stop_reason: str
    warnings: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Leg:
    """One stream of a measurement: who sends, who receives, in which direction, with which stream id."""

    direction: str   # "" (one host), forward (host -> guest, --from -> --to) or reverse (the other way)
    sender: Side
    receiver: Side
    stream: int


def plan_legs(cfg: MeasureConfig, path: TopologyPath) -> list[Leg]:
    """The streams of a run: one, or on a VM or between agents one per direction asked for (``both``: two at once)."""
    if path.guest is None and path.kind != "agents":
        return [Leg("", path.sender, path.receiver, cfg.stream)]
    legs = []
    if cfg.direction in ("forward", "both"):
        legs.append(Leg("forward", path.sender, path.receiver, cfg.stream))
    if cfg.direction in ("reverse", "both"):
        legs.append(Leg("reverse", path.receiver, path.sender, (cfg.stream + 1) & 0x7FFFFFFF))
    return legs


def endpoints(cfg: MeasureConfig, path: TopologyPath, leg: Leg | None = None) -> tuple[Endpoint, Endpoint]:
    """Where the sender sends and where the receiver listens, on this topology."""
    sender, receiver = (leg.sender, leg.receiver) if leg is not None else (path.sender, path.receiver)
    if cfg.family == "packet":
        tx = Endpoint("packet", "", 0, sender.ifname, receiver.mac, cfg.ethertype, cfg.vid, cfg.pcp)
        rx = Endpoint("packet", "", 0, receiver.ifname, None, cfg.ethertype, cfg.vid, cfg.pcp)
        return tx, rx
    v6 = cfg.family == "inet6"
    if path.kind == "none":
        host, port = parse_hostport(cfg.dest or "", cfg.port or DEFAULT_PORT)
        v6 = v6 or ":" in host
        return (Endpoint("inet6" if v6 else "inet", host, port),
                Endpoint("inet6" if v6 else "inet", "::" if v6 else "0.0.0.0", port))
    addr = receiver.address6 if v6 else receiver.address4
    fam = "inet6" if v6 else "inet"
    port = cfg.port if cfg.port is not None else (0 if path.kind == "loopback" else DEFAULT_PORT)
    # The interfaces matter for UDP too: hardware timestamping is switched on per device.
    return (Endpoint(fam, addr or "", port, sender.ifname),
            Endpoint(fam, addr or "", port, receiver.ifname))


def check_txtime(cfg: MeasureConfig) -> None:
    """--txtime needs the ETF qdisc; say so clearly where the kernel has none."""
    if cfg.txtime_offset_ns is None:
        return
    from latscope.env.qdisc import probe_kinds

    have = probe_kinds(("etf",))["etf"]
    if have is None:
        raise ConfigError("--txtime: cannot check for the ETF qdisc without root")
    if not have:
        raise ConfigError("--txtime needs the ETF qdisc (CONFIG_NET_SCH_ETF), which this kernel does not have")
    if cfg.topology != "none":
        raise ConfigError("--txtime: latscope does not configure ETF itself; use --topology none towards an "
                          "interface that has an etf qdisc")


def measure(cfg: MeasureConfig, store: ResultsStore, **kwargs: Any) -> Outcome:
    """Run sender and receiver across ``cfg.topology`` and store the run (the first, for --direction both)."""
    return measure_all(cfg, store, **kwargs)[0]


@dataclass
class _LegRun:
    """A leg while it runs: its ids, staging directory, worker specs and what the workers returned."""

    leg: Leg
    run_id: str
    stage: Path
    send_spec: SenderSpec
    recv_spec: ReceiverSpec
    tx_ep: Endpoint
    rx_ep: Endpoint
    results: Any = None
    #: Where its host-side workers write their results (see worker_dir); None: the staging directory.
    work: Path | None = None

    @property
    def workdir(self) -> Path:
        # Halves in a guest keep using the staging directory, as their agent expects.
        local = self.leg.sender.agent is None and self.leg.receiver.agent is None
        return self.work if self.work is not None and local else self.stage


def measure_all(
    cfg: MeasureConfig,
    store: ResultsStore,
    *,
    on_progress: ProgressFn | None = None,
    captures: tuple[Capture, ...] = (),
    vm: Any = None,
    path: TopologyPath | None = None,
    notify: Callable[[str], None] | None = None,
) -> list[Outcome]:
    """Measure across ``cfg.topology`` (or the already built ``path``); one stored run per leg."""
    testhooks.hold("boot")
    legs_n = 2 if cfg.direction == "both" else 1
    store.preflight(legs_n * cfg.count * BYTES_PER_PACKET + (1 << 20))
    reaped = reap(store.root)
    check_txtime(cfg)
    privileges.require_raw_sockets(cfg.family)
    env_before = collect_environment()
    created = now_iso()
    topo_cm = contextlib.nullcontext(path) if path is not None else \
        open_topology(cfg.topology, dest=cfg.dest, vm=vm, notify=notify)
    with controller.StopRequest() as stop, topo_cm as topo, contextlib.ExitStack() as stages:
        runs: list[_LegRun] = []
        extra: dict[str, Any] = {}
        if topo.guest is not None:
            _start_guest(topo.guest)
        try:
            for leg in plan_legs(cfg, topo):
                run_id = new_run_id()
                while any(r.run_id == run_id for r in runs):
                    run_id = new_run_id()
                stage = stages.enter_context(store.staging(run_id))
                if not runs:
                    for cap in captures:
                        extra.update(cap.start(stage, topo))
                runs.append(_plan_run(cfg, topo, leg, run_id, stage, extra))
                runs[-1].work = stages.enter_context(worker_dir(stage, cfg.count))
            stop.raise_if_requested()  # a signal during set-up: nothing measured, nothing to store
            clock_check = check_clocks(cfg, topo, runs[0], stop)
            with rt.cpu_dma_latency(cfg.cpu_dma_latency_us) as pm_qos:
                _run_workers(runs, stop, on_progress, cfg.count, topo.guest)
            # Last started, first stopped: the steal sampler, started first, outlasts the trace it names gaps in.
            cap_results = [cap.stop(runs[0].stage) for cap in reversed(captures)][::-1]
        finally:
            # Last started, first closed: a load writing into a log file system ends before it is unmounted.
            for cap in reversed(captures):
                cap.close()
        guest_doc = _finish_guest(topo.guest) if topo.guest is not None else None
        outcomes = []
        for i, lr in enumerate(runs):
            outcomes.append(_store_run(cfg, store, lr, topo, stop, env_before, created, pm_qos,
                                       cap_results if i == 0 else [], guest_doc,
                                       [r.run_id for r in runs if r is not lr], clock_check))
    outcomes[0] = replace(outcomes[0], warnings=(*reaped.notes(), *outcomes[0].warnings))
    return outcomes


@contextlib.contextmanager
def worker_dir(stage: Path, count: int, shm: Path = SHM) -> Iterator[Path]:
    """Where the workers leave their results and scratch files: memory (/dev/shm) when it has room.

    The workers write what they measured when the run ends; on the results
    disk, a disk that filled up meanwhile would lose all of it. In memory it
    survives, and storing can fail cleanly (and keep the run elsewhere).
    Without room in /dev/shm the staging directory is used, as before.
    """
    need = count * WORKER_BYTES_PER_PACKET + (1 << 20)
    try:
        st = os.statvfs(shm)
        if st.f_bavail * st.f_frsize < 2 * need:
            raise OSError("no room")
        path = Path(tempfile.mkdtemp(prefix=f"latscope-work-{os.getpid()}-", dir=shm))
    except OSError:
        yield stage
        return
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _plan_run(cfg: MeasureConfig, topo: TopologyPath, leg: Leg, run_id: str, stage: Path,
              extra: dict[str, Any]) -> _LegRun:
    tx_ep, rx_ep = endpoints(cfg, topo, leg)
    # A half in the guest writes the marker of the guest's own trace instance (trace.guestcapture).
    recv_marker = extra.get("trace_marker" if leg.receiver.agent is None else "guest_trace_marker")
    send_marker = extra.get("trace_marker" if leg.sender.agent is None else "guest_trace_marker")
    # --log-dir/--log-fs (experiment.logfs) put the stream logs elsewhere during the run.
    logs = extra.get("stream_logs") or {}
    hello = {**_hello(cfg, run_id), "direction": leg.direction} if leg.direction else None
    send_spec = sender_spec(cfg, tx_ep, netns=leg.sender.netns, run_id=run_id,
                            stream_log=Path(logs.get("sender", stage / "stream-sender.log")) if cfg.stream_log
                            else None,
                            trace_marker=send_marker, stream=leg.stream, hello=hello)
    # Round trips: a reflector takes the receiver's place; it knows the sender's nonce from the start.
    far_cls, far_nonce = (ReflectorSpec, send_spec.nonce) if cfg.mode == "rtt" else (ReceiverSpec, None)
    recv_spec = far_cls(
        nonce=far_nonce,
        listen=rx_ep, stream=leg.stream, count=cfg.count, cpu=cfg.cpu_recv, prio=cfg.prio_recv,
        mlock=cfg.mlock, netns=leg.receiver.netns,
        stream_log=logs.get("receiver", str(stage / "stream-receiver.log")) if cfg.stream_log else None,
        trace_marker=recv_marker,
        idle_timeout_ns=max(5_000_000_000, 50 * cfg.period_ns), hw_timestamps=cfg.hw_timestamps,
        key_file=cfg.key_file,
    )
    return _LegRun(leg, run_id, stage, send_spec, recv_spec, tx_ep, rx_ep)


def _spawn(side: Side, role: str, spec: SenderSpec | ReceiverSpec, stage: Path, progress: Path):
    if side.agent is not None:
        return side.agent.spawn(role, to_json(spec), stage, progress)
    return controller.spawn(role, spec, stage, progress)


def _run_workers(runs: list[_LegRun], stop: controller.StopRequest, on_progress: ProgressFn | None,
                 total: int, guest: Any = None) -> None:
    """Start every receiver, then every sender; wait for the senders, then the receivers; collect all."""
    receivers: list[Any] = []
    senders: list[Any] = []
    try:
        progress = [controller.progress_file(lr.workdir) for lr in runs]
        for lr, prog in zip(runs, progress, strict=True):
            role = "reflector" if isinstance(lr.recv_spec, ReflectorSpec) else "receiver"
            receivers.append(_spawn(lr.leg.receiver, role, lr.recv_spec, lr.workdir, prog))
        asked = time.monotonic()
        for lr, rx in zip(runs, receivers, strict=True):
            port = rx.wait_ready(READY_TIMEOUT_GUEST_S if lr.leg.receiver.agent and guest is not None
                                 else READY_TIMEOUT_S)
            if lr.leg.receiver.agent is not None and guest is not None:
                guest.ready_s.append(time.monotonic() - asked)
            if port and lr.send_spec.dest.port != port:
                # The receiver took any free port (loopback): aim the sender at it.
                lr.send_spec = replace(lr.send_spec, dest=replace(lr.send_spec.dest, port=port))
                lr.tx_ep, lr.rx_ep = replace(lr.tx_ep, port=port), replace(lr.rx_ep, port=port)
        if len(runs) > 1:
            _common_start(runs, time.monotonic() - asked, guest)
        for lr, prog in zip(runs, progress, strict=True):
            senders.append(_spawn(lr.leg.sender, "sender", lr.send_spec, lr.workdir, prog))
        with controller.progress_view(progress[0]) as view:
            controller.watch_all(senders, stop, None if on_progress is None else
                                 lambda: on_progress(view[1], view[0], total), partners=receivers)
        # A receiver stops by itself shortly after its sender's end packet;
        # if that packet was lost (or the sender ended early), tell it.
        for lr, tx, rx in zip(runs, senders, receivers, strict=True):
            grace = RECEIVER_GRACE_GUEST_S if lr.leg.receiver.agent and guest is not None else RECEIVER_GRACE_S
            controller.finish_receiver(rx, tx, stop, grace)
        for lr, tx, rx in zip(runs, senders, receivers, strict=True):
            lr.results = (controller.collect_half(tx), controller.collect_half(rx))
    finally:
        for w in senders + receivers:
            w.kill()


def _start_guest(guest: Any) -> None:
    """A guest that served a run before gets a fresh clock estimate: the one from its boot is old."""
    if guest.clock_after is not None:
        guest.clock_before = guest.link.exchange(guest.options.clock_samples)
        guest.clock_after = None


def _common_start(runs: list[_LegRun], startup_s: float, guest: Any) -> None:
    """Streams that run "at once" start at one absolute time, late enough for the slowest sender to be up.

    A sender in an emulated guest needs about as long to start as the guest's
    receiver did (the same imports), so that time, with a margin, is the lead.
    """
    if any(lr.send_spec.base_time_ns is not None for lr in runs):
        return
    period = runs[0].send_spec.period_ns
    lead_ns = int((1.5 * startup_s + 2.0) * 1e9)
    base = (time.clock_gettime_ns(time.CLOCK_REALTIME) + lead_ns) // period * period + period
    for lr in runs:
        # A guest sender schedules on the guest's clock, which runs ahead of ours by the offset.
        own = base + (guest.clock_before.offset_ns if guest is not None and lr.leg.sender.agent else 0)
        lr.send_spec = replace(lr.send_spec, base_time_ns=own)


def _finish_guest(guest: Any) -> dict[str, Any]:
    """After the run: the guest clock again (drift), its threads and environment (slow under TCG: not before)."""
    try:
        guest.clock_after = guest.link.exchange(guest.options.clock_samples)
    except CaptureError as exc:
        guest.notes.append(f"no clock exchange after the run: {exc}")
    guest.refresh_threads()
    if guest.environment is None:
        try:
            guest.environment = guest.link.request("environment", timeout_s=180).header.get("environment") or {}
        except CaptureError as exc:
            return {"error": str(exc)}
    return guest.environment


def _store_run(cfg: MeasureConfig, store: ResultsStore, lr: _LegRun, topo: TopologyPath,
               stop: controller.StopRequest, env_before: dict[str, Any], created: str, pm_qos: Any,
               cap_results: list[dict[str, Any]], guest_env: dict[str, Any] | None,
               siblings: list[str], clock_check: dict[str, Any] | None = None) -> Outcome:
    (s_arr, s_info), (r_arr, r_info) = lr.results
    raise_worker_error(s_info, r_info)
    guest = topo.guest
    clock_doc = None
    if guest is not None:
        s_arr, r_arr, s_info, clock_doc = _onto_host_clock(lr.leg, guest, s_arr, r_arr, s_info)
    if cfg.mode == "rtt":
        cols, counts, end = rttjoin.join(s_arr, s_info, r_arr if lr.leg.receiver.agent is None else None, r_info,
                                         lr.leg.stream, stop.during_measurement)
    else:
        cols, counts, end = ending.join(s_arr, s_info, r_arr, r_info, lr.leg.stream, stop.during_measurement)
    for res in cap_results:
        counts.update(res.get("completeness", {}))
    interrupted = end.interrupted
    samples = Samples(cols)
    summary = summarise(samples, counts)
    for res in cap_results:
        summary.update(res.get("summary", {}))  # facts of the capture (host steal) that samples cannot give
    env: dict[str, Any] = {
        "before": env_before,
        "after": {"captured_at": now_iso()},
        "topology": topo.description,
        "workers": {"sender": s_info.get("scheduling"), "receiver": r_info.get("scheduling")},
    }
    record_extra: dict[str, Any] = {"capture": {**capture_facts(s_info, r_info), "cpu_dma_latency": pm_qos}}
    for res in cap_results:
        record_extra.update(res.get("record", {}))
    config = {**cfg.to_json(), "sender_endpoint": endpoint_doc(lr.tx_ep),
              "receiver_endpoint": endpoint_doc(lr.rx_ep), "base_time_ns": s_info.get("base_time_ns"),
              "stream": lr.leg.stream}
    for res in cap_results:
        config.update(res.get("config", {}))
    config.setdefault("trace", False)  # --trace: set by the capture (compare lists it among the differences)
    name = cfg.name
    if guest is not None:
        env["guest"] = guest_env
        record_extra["vm"] = {**guest.describe(), "direction": lr.leg.direction, "siblings": siblings}
        assert clock_doc is not None  # a guest half's timestamps were moved onto the host clock above
        clock_doc["warning"] = clock_warning(clock_doc, summary)
        summary["clock"] = clock_doc
        summary["vm"] = {"accel": guest.accel, "emulated_cpu": guest.accel == "tcg",
                         "direction": lr.leg.direction, "variant": guest.net.variant, "cwd": guest.options.cwd}
        config["direction"] = lr.leg.direction
        config["vm"] = {k: v for k, v in guest.options.to_json().items() if k not in ("clock_skew_ns",)}
        config["vm"]["accel"] = guest.accel
        if cfg.direction == "both" and name:
            name = f"{name}-{lr.leg.direction}"
    elif lr.leg.direction:
        # Between network agents (latscope.orchestrate): which way, the hosts, the other direction's run.
        config["direction"] = lr.leg.direction
        record_extra["agents"] = {**topo.description, "direction": lr.leg.direction, "siblings": siblings}
        if cfg.direction == "both" and name:
            name = f"{name}-{lr.leg.direction}"
    if topo.hosts is not None:
        env["hosts"] = topo.hosts
    if clock_check is not None:
        summary["clock_check"] = clockbound.flag(clock_check, (summary.get("latency_us") or {}).get("p50"))
    record = RunRecord(
        run_id=lr.run_id, name=name, tags=cfg.tags, created=created,
        status="interrupted" if interrupted else "complete",
        config=config, environment=env, completeness=counts, summary=summary,
        source={"kind": "measured", "verb": "run", "metric": "round-trip" if cfg.mode == "rtt" else "one-way latency",
                **({"direction": lr.leg.direction} if lr.leg.direction else {})},
        extra=record_extra,
    )
    testhooks.hold("storing")
    tidy_stage(lr.stage)
    # A results disk that filled up during the run: NotStored says where the run was kept instead.
    stored = store.store_run(lr.stage, record, cols)
    warnings = [*end.warnings, *warnings_for(counts), *ending.late_signal(stop.late, interrupted)]
    return Outcome(stored, summary, interrupted, end.reason, tuple(warnings))


#: Round trips in the burst before a one-way run (--require-sync): 64 ms at 1 kHz.
CLOCK_BURST = 64


def check_clocks(cfg: MeasureConfig, topo: TopologyPath, lr: _LegRun, stop: controller.StopRequest
                 ) -> dict[str, Any] | None:
    """The clock check before a one-way run (None for round trips); CheckFailed when --require-sync refuses.

    This host's synchronisation (env.clock) is always recorded. With --require-sync
    a burst of round trips between the two ends measures their offset directly
    (not on a VM, whose clock latscope corrects by its own exchange).
    """
    from latscope.env.clock import check_host

    if cfg.mode != "oneway":
        return None
    guest = topo.guest
    rtt = None
    if cfg.require_sync_ns is not None and guest is None and topo.kind != "none":
        rtt = clock_burst(cfg, topo, lr, stop)
    hosts: dict[str, Any] = {"local": check_host()}
    if topo.hosts is not None:
        # Between agents: each end's own synchronisation, as its agent (or this host, for `local`) reported it.
        hosts = {role: doc["sync"] for role, doc in (topo.hosts.get("clock") or {}).items()
                 if isinstance(doc, dict) and isinstance(doc.get("sync"), dict)} or hosts
    check = clockbound.assess(
        hosts, same_clock=topo.kind in clockbound.SAME_CLOCK_TOPOLOGIES, rtt=rtt,
        guest_bound_ns=guest.clock_before.uncertainty_ns if guest is not None and guest.clock_before else None)
    if cfg.require_sync_ns is not None:
        why = clockbound.refusal(check, cfg.require_sync_ns)
        if why:
            raise CheckFailed(why)
    return check


def clock_burst(cfg: MeasureConfig, topo: TopologyPath, lr: _LegRun, stop: controller.StopRequest
                ) -> dict[str, Any] | None:
    """A short round-trip run between the run's two ends (same path, same ports); its offset estimate."""
    import numpy as np

    from latscope.analysis import metrics, roundtrip

    burst_cfg = replace(cfg, mode="rtt", count=CLOCK_BURST, period_ns=1_000_000, require_sync_ns=None,
                        stream_log=False, base_time_ns=None, txtime_offset_ns=None, cpu_dma_latency_us=None)
    work = lr.workdir / "clock-burst"
    work.mkdir()
    try:
        burst = _plan_run(burst_cfg, topo, lr.leg, lr.run_id, work, {})
        _run_workers([burst], stop, None, CLOCK_BURST)
        (s_arr, s_info), (r_arr, r_info) = burst.results
        raise_worker_error(s_info, r_info)
        cols, _counts, _end = rttjoin.join(s_arr, s_info, r_arr, r_info, burst.leg.stream)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    samples = Samples({k: np.asarray(v) for k, v in cols.items()})
    return roundtrip.estimate(metrics.forward_delay(samples), metrics.reverse_delay(samples))


def _onto_host_clock(leg: Leg, guest: Any, s_arr, r_arr, s_info):
    """Move the guest half's timestamps onto the host's clock with the estimated offset; describe it."""
    from latscope.remote.clock import HEADER_CLOCK, OWN_CLOCK, to_host_clock
    from latscope.store.samples import MISSING

    before, after = guest.clock_before, guest.clock_after
    if leg.receiver.agent is not None and r_arr is not None:
        r_arr = to_host_clock(r_arr, OWN_CLOCK["receiver"], before, after, MISSING)
    if leg.sender.agent is not None:
        if s_arr is not None:
            s_arr = to_host_clock(s_arr, OWN_CLOCK["sender"], before, after, MISSING)
        if r_arr is not None:
            r_arr = to_host_clock(r_arr, HEADER_CLOCK, before, after, MISSING)
        if s_info.get("base_time_ns"):
            s_info = {**s_info, "base_time_ns": int(s_info["base_time_ns"]) - before.offset_ns}
    bound = max(before.uncertainty_ns, after.uncertainty_ns if after else 0)
    doc: dict[str, Any] = {
        "corrected_side": "receiver" if leg.receiver.agent is not None else "sender",
        "offset_ns": before.offset_ns, "offset_after_ns": after.offset_ns if after else None,
        "uncertainty_ns": bound, "method": before.method,
    }
    return s_arr, r_arr, s_info, doc


def clock_warning(clock: dict[str, Any], summary: dict[str, Any]) -> str | None:
    """Say so when the clock bound is not small against the latencies it corrects."""
    p50 = (summary.get("latency_us") or {}).get("p50")
    bound_us = clock["uncertainty_ns"] / 1000
    if p50 is None or bound_us <= 0.25 * abs(p50):
        return None
    return (f"the guest clock is known to +-{bound_us:.0f} us only, against a median latency of {p50:.0f} us: "
            "each one-way figure of this run may be off by that much (values below zero within it are "
            "possible); compare runs of the same set-up, or use round trips (not in latscope yet)")


def capture_facts(s_info: dict[str, Any], r_info: dict[str, Any]) -> dict[str, Any]:
    """How the halves ended and what they saw, beyond the counts (run.json "capture")."""
    facts: dict[str, Any] = {
        "receiver": {k: r_info.get(k) for k in ("stop_reason", "foreign", "sent_reported", "interrupted",
                                                "hw_timestamping", "signal", "died", "authenticated", "capacity",
                                                "refused", "echoed", "echo_failed", "echo_end_sent")},
    }
    if s_info:
        facts["sender"] = {k: s_info.get(k) for k in ("done", "send_failed", "interrupted", "per_packet_tx_id",
                                                     "txtime_errors", "tx_timestamps", "hw_timestamping",
                                                     "signal", "died", "authenticated", "echoes", "echo_end")}
    return facts


def raise_worker_error(*infos: dict[str, Any]) -> None:
    for info in infos:
        if info.get("error"):
            raise error_from(info.get("error_type"), str(info["error"]))


def sender_spec(cfg: MeasureConfig, dest: Endpoint, *, netns: str | None, run_id: str,
                stream_log: Path | None = None, trace_marker: str | None = None, stream: int | None = None,
                hello: dict[str, Any] | None = None) -> SenderSpec:
    """The sender's instructions for ``cfg`` towards ``dest``."""
    return SenderSpec(
        dest=dest, stream=cfg.stream if stream is None else stream, period_ns=cfg.period_ns, count=cfg.count, size=cfg.size,
        base_time_ns=cfg.base_time_ns, spin_ns=cfg.spin_ns, tos=cfg.tos, so_priority=cfg.so_priority,
        txtime_offset_ns=cfg.txtime_offset_ns, cpu=cfg.cpu_send, prio=cfg.prio_send, mlock=cfg.mlock,
        netns=netns, stream_log=str(stream_log) if stream_log else None, trace_marker=trace_marker,
        hello=hello or _hello(cfg, run_id), hw_timestamps=cfg.hw_timestamps, key_file=cfg.key_file,
        echo=cfg.mode == "rtt",
    )


def _hello(cfg: MeasureConfig, run_id: str) -> dict[str, Any]:
    """What the receiver learns from the sender: enough to record the run on another host."""
    return {
        "run_id": run_id, "period_ns": cfg.period_ns, "count": cfg.count, "size": cfg.size,
        "spin_ns": cfg.spin_ns, "tos": cfg.tos, "so_priority": cfg.so_priority, "family": cfg.family,
        "vid": cfg.vid, "pcp": cfg.pcp, "txtime_offset_ns": cfg.txtime_offset_ns,
        "cpu": cfg.cpu_send, "prio": cfg.prio_send, "name": cfg.name, "tags": list(cfg.tags),
        "host": os.uname().nodename, "kernel": os.uname().release,
    }


def endpoint_doc(ep: Endpoint) -> dict[str, Any]:
    if ep.family == "packet":
        return {"family": ep.family, "ifname": ep.ifname, "mac": ep.mac, "ethertype": ep.ethertype,
                "vid": ep.vid, "pcp": ep.pcp}
    return {"family": ep.family, "address": ep.address, "port": ep.port}


def tidy_stage(stage: Path) -> None:
    """Drop the workers' scratch files; the run keeps samples, run.json and logs."""
    for p in stage.iterdir():
        if p.suffix in (".npz", ".stderr") or p.name.endswith("-spec.json") or p.name.endswith(".npz.json") \
                or p.name == "progress":
            p.unlink()


def warnings_for(counts: dict[str, int]) -> list[str]:
    out = []
    if counts.get("missing_tx_timestamps"):
        out.append(f"{counts['missing_tx_timestamps']} packets have no kernel TX timestamp")
    if counts.get("missing_rx_timestamps"):
        out.append(f"{counts['missing_rx_timestamps']} packets have no kernel RX timestamp")
    if counts.get("send_failed"):
        out.append(f"{counts['send_failed']} sends failed (counted, not lost)")
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
