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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from latscope.analysis.summary import summarise
from latscope.env import collect_environment
from latscope.errors import ConfigError, error_from
from latscope.probe import controller, rt
from latscope.probe.config import MeasureConfig, parse_hostport
from latscope.probe.merge import merge
from latscope.probe.spec import DEFAULT_PORT, Endpoint, ReceiverSpec, SenderSpec
from latscope.store.layout import ResultsStore, StoredRun, new_run_id
from latscope.store.runfile import RunRecord
from latscope.store.samples import Samples
from latscope.topo import TopologyPath, open_topology

ProgressFn = Callable[[int, int, int], None]
BYTES_PER_PACKET = 400
#: The workers' result files per packet: the sender's 6 and the receiver's 9 int64 columns.
WORKER_BYTES_PER_PACKET = 120
SHM = Path("/dev/shm")
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
    created = now_iso()
    with controller.StopRequest() as stop, open_topology(cfg.topology, dest=cfg.dest) as path, \
            store.staging(run_id) as stage, worker_dir(stage, cfg.count) as work:
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
            send_spec = sender_spec(cfg, tx_ep, netns=path.sender.netns, run_id=run_id,
                                    stream_log=stage / "stream-sender.log" if cfg.stream_log else None,
                                    trace_marker=extra.get("trace_marker"))
            with rt.cpu_dma_latency(cfg.cpu_dma_latency_us) as pm_qos:
                workers, port = _run_workers(send_spec, recv_spec, work, stop, on_progress, cfg.count)
            if port:
                tx_ep, rx_ep = replace(tx_ep, port=port), replace(rx_ep, port=port)
            cap_results = [cap.stop(stage) for cap in captures]
        finally:
            for cap in captures:
                cap.close()
        (s_arr, s_info), (r_arr, r_info) = workers
        raise_worker_error(s_info, r_info)
        cols, counts = merge(s_arr, r_arr, r_info, cfg.stream)
        for res in cap_results:
            counts.update(res.get("completeness", {}))
        interrupted = stop.requested or bool(s_info.get("interrupted")) or bool(r_info.get("interrupted"))
        samples = Samples(cols)
        summary = summarise(samples, counts)
        env = {
            "before": env_before,
            "after": {"captured_at": now_iso()},
            "topology": path.description,
            "workers": {"sender": s_info.get("scheduling"), "receiver": r_info.get("scheduling")},
        }
        record_extra: dict[str, Any] = {"capture": {**capture_facts(s_info, r_info), "cpu_dma_latency": pm_qos}}
        for res in cap_results:
            record_extra.update(res.get("record", {}))
        record = RunRecord(
            run_id=run_id, name=cfg.name, tags=cfg.tags, created=created,
            status="interrupted" if interrupted else "complete",
            config={**cfg.to_json(), "sender_endpoint": endpoint_doc(tx_ep), "receiver_endpoint": endpoint_doc(rx_ep),
                    "base_time_ns": s_info.get("base_time_ns")},
            environment=env, completeness=counts, summary=summary,
            source={"kind": "measured", "verb": "run", "metric": "one-way latency"},
            extra=record_extra,
        )
        tidy_stage(stage)
        # A results disk that filled up during the run: NotStored says where the run was kept instead.
        stored = store.store_run(stage, record, cols)
    reason = "signal" if stop.requested else str(r_info.get("stop_reason") or "")
    return Outcome(stored, summary, interrupted, reason, tuple(warnings_for(counts)))


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
            controller.watch(sender, stop, None if on_progress is None else
                             lambda: on_progress(view[1], view[0], total))
        # The receiver stops by itself shortly after the sender's end packet;
        # if that packet was lost, tell it.
        if not receiver.wait(RECEIVER_GRACE_S if not stop.requested else 0.5):
            receiver.stop()
        return (sender.collect(), receiver.collect()), port
    finally:
        for w in (sender, receiver):
            if w is not None:
                w.kill()


def capture_facts(s_info: dict[str, Any], r_info: dict[str, Any]) -> dict[str, Any]:
    """How the halves ended and what they saw, beyond the counts (run.json "capture")."""
    facts: dict[str, Any] = {
        "receiver": {k: r_info.get(k) for k in ("stop_reason", "foreign", "sent_reported", "interrupted",
                                                "hw_timestamping")},
    }
    if s_info:
        facts["sender"] = {k: s_info.get(k) for k in ("done", "send_failed", "interrupted", "per_packet_tx_id",
                                                     "txtime_errors", "tx_timestamps", "hw_timestamping")}
    return facts


def raise_worker_error(*infos: dict[str, Any]) -> None:
    for info in infos:
        if info.get("error"):
            raise error_from(info.get("error_type"), str(info["error"]))


def sender_spec(cfg: MeasureConfig, dest: Endpoint, *, netns: str | None, run_id: str,
                stream_log: Path | None = None, trace_marker: str | None = None) -> SenderSpec:
    """The sender's instructions for ``cfg`` towards ``dest``."""
    return SenderSpec(
        dest=dest, stream=cfg.stream, period_ns=cfg.period_ns, count=cfg.count, size=cfg.size,
        base_time_ns=cfg.base_time_ns, spin_ns=cfg.spin_ns, tos=cfg.tos, so_priority=cfg.so_priority,
        txtime_offset_ns=cfg.txtime_offset_ns, cpu=cfg.cpu_send, prio=cfg.prio_send, mlock=cfg.mlock,
        netns=netns, stream_log=str(stream_log) if stream_log else None, trace_marker=trace_marker,
        hello=_hello(cfg, run_id), hw_timestamps=cfg.hw_timestamps,
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
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
