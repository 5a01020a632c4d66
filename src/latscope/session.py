"""A measurement from request to stored run: topology, workers, merge, store.

This is the core behind `latscope run`, `recv` and `send`. It never prints;
progress goes to a callback and the outcome is returned.
"""

from __future__ import annotations

import datetime as _dt
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from latscope.analysis.summary import summarise
from latscope.env import collect_environment
from latscope.errors import CaptureError, ConfigError
from latscope.probe import controller
from latscope.probe.config import MeasureConfig, parse_hostport
from latscope.probe.merge import merge
from latscope.probe.spec import DEFAULT_PORT, Endpoint, ReceiverSpec, SenderSpec
from latscope.store.layout import ResultsStore, StoredRun, new_run_id
from latscope.store.runfile import RunRecord
from latscope.store.samples import Samples, write_samples
from latscope.topo import TopologyPath, open_topology

ProgressFn = Callable[[int, int, int], None]
BYTES_PER_PACKET = 400
RECEIVER_GRACE_S = 5.0


class Capture(Protocol):
    """Something recorded alongside the probe (kernel traces): started before, stopped after."""

    def start(self, workdir: Path, path: TopologyPath) -> dict[str, Any]:
        """Begin recording; return extra worker spec fields (e.g. ``trace_marker``)."""

    def stop(self, workdir: Path) -> dict[str, Any]:
        """Stop recording, leave files in ``workdir``; return {'record': {...}, 'completeness': {...}}."""

    def close(self) -> None:
        """Release everything (also after errors); must be safe to call twice."""


@dataclass(frozen=True)
class Outcome:
    """What a measurement produced."""

    run: StoredRun
    summary: dict[str, Any]
    interrupted: bool
    stop_reason: str
    warnings: tuple[str, ...] = field(default_factory=tuple)


def endpoints(cfg: MeasureConfig, path: TopologyPath) -> tuple[Endpoint, Endpoint]:
    """Where the sender sends and where the receiver listens, on this topology."""
    if cfg.family == "packet":
        tx = Endpoint("packet", "", 0, path.sender.ifname, path.receiver.mac, cfg.ethertype, cfg.vid, cfg.pcp)
        rx = Endpoint("packet", "", 0, path.receiver.ifname, None, cfg.ethertype, cfg.vid, cfg.pcp)
        return tx, rx
    v6 = cfg.family == "inet6"
    if path.kind == "none":
        host, port = parse_hostport(cfg.dest or "", cfg.port or DEFAULT_PORT)
        v6 = v6 or ":" in host
        return (Endpoint("inet6" if v6 else "inet", host, port),
                Endpoint("inet6" if v6 else "inet", "::" if v6 else "0.0.0.0", port))
    addr = path.receiver.address6 if v6 else path.receiver.address4
    fam = "inet6" if v6 else "inet"
    port = cfg.port if cfg.port is not None else (0 if path.kind == "loopback" else DEFAULT_PORT)
    # The interfaces matter for UDP too: hardware timestamping is switched on per device.
    return (Endpoint(fam, addr or "", port, path.sender.ifname),
            Endpoint(fam, addr or "", port, path.receiver.ifname))


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


def measure(
    cfg: MeasureConfig,
    store: ResultsStore,
    *,
    on_progress: ProgressFn | None = None,
    captures: tuple[Capture, ...] = (),
) -> Outcome:
    """Run sender and receiver across ``cfg.topology`` and store the run."""
    store.preflight(cfg.count * BYTES_PER_PACKET + (1 << 20))
    check_txtime(cfg)
    env_before = collect_environment()
    run_id = new_run_id()
    created = _now_iso()
    with controller.StopRequest() as stop, open_topology(cfg.topology, dest=cfg.dest) as path, \
            store.staging(run_id) as stage:
        tx_ep, rx_ep = endpoints(cfg, path)
        extra: dict[str, Any] = {}
        try:
            for cap in captures:
                extra.update(cap.start(stage, path))
            recv_spec = ReceiverSpec(
                listen=rx_ep, stream=cfg.stream, count=cfg.count, cpu=cfg.cpu_recv, prio=cfg.prio_recv,
                mlock=cfg.mlock, netns=path.receiver.netns,
                stream_log=str(stage / "stream-receiver.log") if cfg.stream_log else None,
                trace_marker=extra.get("trace_marker"),
                idle_timeout_ns=max(5_000_000_000, 50 * cfg.period_ns), hw_timestamps=cfg.hw_timestamps,
            )
            send_spec = SenderSpec(
                dest=tx_ep, stream=cfg.stream, period_ns=cfg.period_ns, count=cfg.count, size=cfg.size,
                base_time_ns=cfg.base_time_ns, spin_ns=cfg.spin_ns, tos=cfg.tos, so_priority=cfg.so_priority,
                txtime_offset_ns=cfg.txtime_offset_ns, cpu=cfg.cpu_send, prio=cfg.prio_send, mlock=cfg.mlock,
                netns=path.sender.netns,
                stream_log=str(stage / "stream-sender.log") if cfg.stream_log else None,
                trace_marker=extra.get("trace_marker"),
                hello=_hello(cfg, run_id), hw_timestamps=cfg.hw_timestamps,
            )
            workers, port = _run_workers(send_spec, recv_spec, stage, stop, on_progress, cfg.count)
            if port:
                tx_ep, rx_ep = replace(tx_ep, port=port), replace(rx_ep, port=port)
            cap_results = [cap.stop(stage) for cap in captures]
        finally:
            for cap in captures:
                cap.close()
        (s_arr, s_info), (r_arr, r_info) = workers
        _raise_worker_error(s_info, r_info)
        cols, counts = merge(s_arr, r_arr, r_info, cfg.stream)
        for res in cap_results:
            counts.update(res.get("completeness", {}))
        interrupted = stop.requested or bool(s_info.get("interrupted")) or bool(r_info.get("interrupted"))
        samples = Samples(cols)
        summary = summarise(samples, counts)
        env = {
            "before": env_before,
            "after": {"captured_at": _now_iso()},
            "topology": path.description,
            "workers": {"sender": s_info.get("scheduling"), "receiver": r_info.get("scheduling")},
        }
        record_extra: dict[str, Any] = {"capture": _capture_facts(s_info, r_info)}
        for res in cap_results:
            record_extra.update(res.get("record", {}))
        record = RunRecord(
            run_id=run_id, name=cfg.name, tags=cfg.tags, created=created,
            status="interrupted" if interrupted else "complete",
            config={**cfg.to_json(), "sender_endpoint": _ep(tx_ep), "receiver_endpoint": _ep(rx_ep),
                    "base_time_ns": s_info.get("base_time_ns")},
            environment=env, completeness=counts, summary=summary,
            source={"kind": "measured", "verb": "run", "metric": "one-way latency"},
            extra=record_extra,
        )
        write_samples(stage / "samples.parquet", cols)
        _tidy(stage)
        stored = store.commit(stage, record)
    reason = "signal" if stop.requested else str(r_info.get("stop_reason") or "")
    return Outcome(stored, summary, interrupted, reason, tuple(_warnings(counts)))


def _run_workers(send_spec: SenderSpec, recv_spec: ReceiverSpec, stage: Path, stop: controller.StopRequest,
                 on_progress: ProgressFn | None, total: int):
    progress = controller.progress_file(stage)
    receiver = controller.spawn("receiver", recv_spec, stage, progress)
    sender = None
    try:
        port = controller.wait_ready(receiver)
        if port and send_spec.dest.port != port:
            # The receiver took any free port (loopback): aim the sender at it.
            send_spec = replace(send_spec, dest=replace(send_spec.dest, port=port))
        sender = controller.spawn("sender", send_spec, stage, progress)
        with controller.progress_view(progress) as view:
            signalled = False
            while sender.alive():
                if stop.requested and not signalled:
                    sender.signal(signal.SIGTERM)
                    signalled = True
                if on_progress is not None:
                    on_progress(view[1], view[0], total)
                sender.wait(0.2)
            if on_progress is not None:
                on_progress(view[1], view[0], total)
        # The receiver stops by itself shortly after the sender's end packet;
        # if that packet was lost, tell it.
        if not receiver.wait(RECEIVER_GRACE_S if not stop.requested else 0.5):
            receiver.stop()
        return (sender.collect(), receiver.collect()), port
    finally:
        for w in (sender, receiver):
            if w is not None and w.alive():
                w.signal(signal.SIGKILL)
                w.wait(5.0)


def _capture_facts(s_info: dict[str, Any], r_info: dict[str, Any]) -> dict[str, Any]:
    """How the halves ended and what they saw, beyond the counts (run.json "capture")."""
    facts: dict[str, Any] = {
        "receiver": {k: r_info.get(k) for k in ("stop_reason", "foreign", "sent_reported", "interrupted",
                                                "hw_timestamping")},
    }
    if s_info:
        facts["sender"] = {k: s_info.get(k) for k in ("done", "send_failed", "interrupted", "per_packet_tx_id",
                                                     "txtime_errors", "tx_timestamps", "hw_timestamping")}
    return facts


def _raise_worker_error(*infos: dict[str, Any]) -> None:
    for info in infos:
        if info.get("error"):
            raise CaptureError(str(info["error"]))


def _hello(cfg: MeasureConfig, run_id: str) -> dict[str, Any]:
    """What the receiver learns from the sender: enough to record the run on another host."""
    return {
        "run_id": run_id, "period_ns": cfg.period_ns, "count": cfg.count, "size": cfg.size,
        "spin_ns": cfg.spin_ns, "tos": cfg.tos, "so_priority": cfg.so_priority, "family": cfg.family,
        "vid": cfg.vid, "pcp": cfg.pcp, "txtime_offset_ns": cfg.txtime_offset_ns,
        "cpu": cfg.cpu_send, "prio": cfg.prio_send, "name": cfg.name, "tags": list(cfg.tags),
        "host": os.uname().nodename, "kernel": os.uname().release,
    }


def _ep(ep: Endpoint) -> dict[str, Any]:
    if ep.family == "packet":
        return {"family": ep.family, "ifname": ep.ifname, "mac": ep.mac, "ethertype": ep.ethertype,
                "vid": ep.vid, "pcp": ep.pcp}
    return {"family": ep.family, "address": ep.address, "port": ep.port}


def _tidy(stage: Path) -> None:
    """Drop the workers' scratch files; the run keeps samples, run.json and logs."""
    for p in stage.iterdir():
        if p.suffix in (".npz", ".stderr") or p.name.endswith("-spec.json") or p.name.endswith(".npz.json") \
                or p.name == "progress":
            p.unlink()


def _warnings(counts: dict[str, int]) -> list[str]:
    out = []
    if counts.get("missing_tx_timestamps"):
        out.append(f"{counts['missing_tx_timestamps']} packets have no kernel TX timestamp")
    if counts.get("missing_rx_timestamps"):
        out.append(f"{counts['missing_rx_timestamps']} packets have no kernel RX timestamp")
    if counts.get("send_failed"):
        out.append(f"{counts['send_failed']} sends failed (counted, not lost)")
    return out


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")



@dataclass(frozen=True)
class Sent:
    """What `latscope send` did (the receiver on the other host stores the run)."""

    sent: int
    send_failed: int
    tx_timestamps: int
    base_time_ns: int
    interrupted: bool
    scheduling: dict[str, Any]


def send_stream(cfg: MeasureConfig, dest: Endpoint, *, netns: str | None = None,
                on_progress: ProgressFn | None = None) -> Sent:
    """Run only the sender towards ``dest`` (another host, or a namespace with `latscope recv`)."""
    check_txtime(cfg)
    import tempfile

    with controller.StopRequest() as stop, tempfile.TemporaryDirectory(prefix="latscope-send-") as tmp:
        work = Path(tmp)
        spec = SenderSpec(
            dest=dest, stream=cfg.stream, period_ns=cfg.period_ns, count=cfg.count, size=cfg.size,
            base_time_ns=cfg.base_time_ns, spin_ns=cfg.spin_ns, tos=cfg.tos, so_priority=cfg.so_priority,
            txtime_offset_ns=cfg.txtime_offset_ns, cpu=cfg.cpu_send, prio=cfg.prio_send, mlock=cfg.mlock,
            netns=netns, hello=_hello(cfg, ""), hw_timestamps=cfg.hw_timestamps,
            stream_log=str(Path.cwd() / "stream-sender.log") if cfg.stream_log else None,
        )
        progress = controller.progress_file(work)
        sender = controller.spawn("sender", spec, work, progress)
        try:
            with controller.progress_view(progress) as view:
                signalled = False
                while sender.alive():
                    if stop.requested and not signalled:
                        sender.signal(signal.SIGTERM)
                        signalled = True
                    if on_progress is not None:
                        on_progress(view[1], 0, cfg.count)
                    sender.wait(0.2)
            _arrays, info = sender.collect()
        finally:
            if sender.alive():
                sender.signal(signal.SIGKILL)
                sender.wait(5.0)
    _raise_worker_error(info)
    return Sent(
        sent=int(info.get("done", 0)) - int(info.get("send_failed", 0)),
        send_failed=int(info.get("send_failed", 0)),
        tx_timestamps=int(info.get("tx_timestamps", 0)),
        base_time_ns=int(info.get("base_time_ns", 0)),
        interrupted=stop.requested or bool(info.get("interrupted")),
        scheduling=info.get("scheduling") or {},
    )


@dataclass(frozen=True)
class ReceiveConfig:
    """What `latscope recv` was asked to do."""

    listen: Endpoint
    cpu: int | None = None
    prio: int | None = None
    mlock: bool = True
    hw_timestamps: bool = True
    netns: str | None = None
    first_timeout_ns: int = 0
    idle_timeout_ns: int = 5_000_000_000
    stream: int | None = None
    stream_log: bool = False
    name: str = ""
    tags: tuple[str, ...] = ()


def receive_stream(rcfg: ReceiveConfig, store: ResultsStore, *, on_progress: ProgressFn | None = None,
                   on_ready: Callable[[], None] | None = None) -> Outcome:
    """Run only the receiver until the sender's end packet, a timeout or a signal; store the run."""
    store.preflight(1 << 20)
    env_before = collect_environment()
    run_id = new_run_id()
    created = _now_iso()
    with controller.StopRequest() as stop, store.staging(run_id) as stage:
        spec = ReceiverSpec(
            listen=rcfg.listen, stream=rcfg.stream, cpu=rcfg.cpu, prio=rcfg.prio, mlock=rcfg.mlock,
            netns=rcfg.netns, first_timeout_ns=rcfg.first_timeout_ns, idle_timeout_ns=rcfg.idle_timeout_ns,
            stream_log=str(stage / "stream-receiver.log") if rcfg.stream_log else None,
            hw_timestamps=rcfg.hw_timestamps,
        )
        progress = controller.progress_file(stage)
        receiver = controller.spawn("receiver", spec, stage, progress)
        try:
            controller.wait_ready(receiver)
            if on_ready is not None:
                on_ready()
            with controller.progress_view(progress) as view:
                signalled = False
                while receiver.alive():
                    if stop.requested and not signalled:
                        receiver.signal(signal.SIGTERM)
                        signalled = True
                    if on_progress is not None:
                        on_progress(view[0], view[0], 0)
                    receiver.wait(0.2)
            arrays, info = receiver.collect()
        finally:
            if receiver.alive():
                receiver.signal(signal.SIGKILL)
                receiver.wait(5.0)
        _raise_worker_error(info)
        hello = info.get("hello") or {}
        if not info.get("received") and not hello:
            raise CaptureError(f"no packets arrived ({info.get('stop_reason') or 'stopped'}); nothing saved")
        cols, counts = merge(None, arrays, info, int(info.get("stream") or 0),
                             base_time_ns=hello.get("base_time_ns"), period_ns=hello.get("period_ns"))
        summary = summarise(Samples(cols), counts)
        interrupted = stop.requested
        status = "interrupted" if interrupted else "complete" if info.get("sent_reported") is not None \
            else "incomplete"
        config = {
            "verb": "recv", "listen": _ep(rcfg.listen), "cpu_recv": rcfg.cpu, "prio_recv": rcfg.prio,
            "period_ns": hello.get("period_ns"), "count": hello.get("count"), "size": hello.get("size"),
            "sender": hello, "stream": info.get("stream"),
        }
        record = RunRecord(
            run_id=run_id, name=rcfg.name or str(hello.get("name") or ""),
            tags=rcfg.tags or tuple(hello.get("tags") or ()), created=created,
            status=status, config=config,
            environment={"before": env_before, "after": {"captured_at": _now_iso()},
                         "workers": {"receiver": info.get("scheduling")}},
            completeness=counts, summary=summary,
            source={"kind": "measured", "verb": "recv", "metric": "one-way latency",
                    "sender_host": hello.get("host")},
            extra={"capture": _capture_facts({}, info)},
        )
        write_samples(stage / "samples.parquet", cols)
        _tidy(stage)
        stored = store.commit(stage, record)
    warnings = _warnings(counts)
    if status == "incomplete":
        warnings.append("the sender's end packet never arrived: packets lost at the very end are not counted")
    return Outcome(stored, summary, interrupted, str(info.get("stop_reason") or ""), tuple(warnings))
