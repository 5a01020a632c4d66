"""The two halves on their own: `latscope send` towards another host, `latscope recv` storing the run."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latscope import privileges
from latscope.analysis.summary import summarise
from latscope.env import collect_environment
from latscope.errors import CaptureError
from latscope.leftovers import SEND_SCRATCH_PREFIX, reap
from latscope.probe import controller, wire
from latscope.probe import hello as hello_fields
from latscope.probe.config import MeasureConfig
from latscope.probe.merge import merge
from latscope.probe.spec import Endpoint, ReceiverSpec
from latscope.session import (
    Outcome,
    ProgressFn,
    capture_facts,
    check_txtime,
    endpoint_doc,
    now_iso,
    raise_worker_error,
    sender_spec,
    tidy_stage,
    warnings_for,
)
from latscope.store.layout import ResultsStore, new_run_id
from latscope.store.runfile import RunRecord
from latscope.store.samples import Samples


@dataclass(frozen=True)
class Sent:
    """What `latscope send` did (the receiver on the other host stores the run)."""

    sent: int
    stream: int
    send_failed: int
    tx_timestamps: int
    base_time_ns: int
    interrupted: bool
    scheduling: dict[str, Any]


def send_stream(cfg: MeasureConfig, dest: Endpoint, *, netns: str | None = None,
                on_progress: ProgressFn | None = None) -> Sent:
    """Run only the sender towards ``dest`` (another host, or a namespace with `latscope recv`)."""
    check_txtime(cfg)
    privileges.require_raw_sockets(cfg.family)
    # The pid in the name lets the next run remove it if this process is killed (latscope.leftovers).
    scratch = tempfile.TemporaryDirectory(prefix=f"{SEND_SCRATCH_PREFIX}{os.getpid()}-")
    with controller.StopRequest() as stop, scratch as tmp:
        work = Path(tmp)
        spec = sender_spec(cfg, dest, netns=netns, run_id="",
                           stream_log=Path.cwd() / "stream-sender.log" if cfg.stream_log else None)
        progress = controller.progress_file(work)
        sender = controller.spawn("sender", spec, work, progress)
        try:
            with controller.progress_view(progress) as view:
                controller.watch(sender, stop, None if on_progress is None else
                                 lambda: on_progress(view[1], 0, cfg.count))
            _arrays, info = sender.collect()
        finally:
            sender.kill()
    raise_worker_error(info)
    return Sent(
        sent=int(info.get("done", 0)) - int(info.get("send_failed", 0)),
        stream=cfg.stream,
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
    key_file: str | None = None


def receive_stream(rcfg: ReceiveConfig, store: ResultsStore, *, on_progress: ProgressFn | None = None,
                   on_ready: Callable[[], None] | None = None) -> Outcome:
    """Run only the receiver until the sender's end packet, a timeout or a signal; store the run."""
    privileges.require_raw_sockets(rcfg.listen.family)
    store.preflight(1 << 20)
    reaped = reap(store.root)
    env_before = collect_environment()
    run_id = new_run_id()
    created = now_iso()
    with controller.StopRequest() as stop, store.staging(run_id) as stage:
        spec = ReceiverSpec(
            listen=rcfg.listen, stream=rcfg.stream, cpu=rcfg.cpu, prio=rcfg.prio, mlock=rcfg.mlock,
            netns=rcfg.netns, first_timeout_ns=rcfg.first_timeout_ns, idle_timeout_ns=rcfg.idle_timeout_ns,
            stream_log=str(stage / "stream-receiver.log") if rcfg.stream_log else None,
            hw_timestamps=rcfg.hw_timestamps, key_file=rcfg.key_file,
        )
        progress = controller.progress_file(stage)
        receiver = controller.spawn("receiver", spec, stage, progress)
        try:
            controller.wait_ready(receiver)
            if on_ready is not None:
                on_ready()
            with controller.progress_view(progress) as view:
                controller.watch(receiver, stop, None if on_progress is None else
                                 lambda: on_progress(view[0], view[0], 0))
            arrays, info = receiver.collect()
        finally:
            receiver.kill()
        raise_worker_error(info)
        # The worker checked the hello already; checking again keeps a bad one from reaching run.json.
        hello = hello_fields.checked(info.get("hello")) or {}
        if not info.get("received") and not hello:
            foreign = {k: v for k, v in (info.get("foreign") or {}).items() if v}
            ignored = (f"; {sum(foreign.values())} datagrams that were not a stream's were ignored ("
                       + ", ".join(f"{k} {v}" for k, v in sorted(foreign.items())) + ")") if foreign else ""
            raise CaptureError(f"no packets arrived ({info.get('stop_reason') or 'stopped'}){ignored}; nothing saved")
        cols, counts = merge(None, arrays, info, int(info.get("stream") or 0),
                             base_time_ns=hello.get("base_time_ns"), period_ns=hello.get("period_ns"))
        summary = summarise(Samples(cols), counts)
        interrupted = stop.requested
        status = "interrupted" if interrupted else "complete" if info.get("sent_reported") is not None \
            else "incomplete"
        config = {
            "verb": "recv", "listen": endpoint_doc(rcfg.listen), "cpu_recv": rcfg.cpu, "prio_recv": rcfg.prio,
            "period_ns": hello.get("period_ns"), "count": hello.get("count"), "size": hello.get("size"),
            "sender": hello, "stream": info.get("stream"),
        }
        record = RunRecord(
            run_id=run_id, name=rcfg.name or str(hello.get("name") or ""),
            tags=rcfg.tags or tuple(hello.get("tags") or ()), created=created,
            status=status, config=config,
            environment={"before": env_before, "after": {"captured_at": now_iso()},
                         "workers": {"receiver": info.get("scheduling")}},
            completeness=counts, summary=summary,
            source={"kind": "measured", "verb": "recv", "metric": "one-way latency",
                    "sender_host": hello.get("host")},
            extra={"capture": capture_facts({}, info)},
        )
        tidy_stage(stage)
        stored = store.store_run(stage, record, cols)  # a full disk: NotStored says where the run was kept
    warnings = [*reaped.notes(), *warnings_for(counts),
                *foreign_warnings(info.get("foreign") or {}, rcfg.key_file is not None)]
    if counts.get("refused"):
        warnings.append(f"{counts['refused']} packets were not stored: the receiver had memory for "
                        f"{info.get('capacity')} (a quarter of the memory available when it started)")
    if status == "incomplete":
        warnings.append("the sender's end packet never arrived: packets lost at the very end are not counted")
    return Outcome(stored, summary, interrupted, str(info.get("stop_reason") or ""), tuple(warnings))


def foreign_warnings(foreign: dict[str, int], keyed: bool) -> list[str]:
    """What the foreign packets at `recv` suggest doing: forgeries, another sender, a missing key."""
    out = []
    if foreign.get(wire.FOREIGN_OTHER_HELLO):
        out.append(f"{foreign[wire.FOREIGN_OTHER_HELLO]} hello packets of another sender were ignored (the run "
                   "took the first valid one); if that was not your sender, pin it with --stream on both sides "
                   "or authenticate with --key-file")
    if foreign.get(wire.FOREIGN_AUTH):
        out.append(f"{foreign[wire.FOREIGN_AUTH]} packets failed authentication"
                   + ("" if keyed else " (they carried a MAC: give recv the sender's --key-file)"))
    if foreign.get(wire.FOREIGN_NONCE):
        out.append(f"{foreign[wire.FOREIGN_NONCE]} packets carried the run's stream id without its nonce "
                   "(forged, or left over from an earlier run)")
    return out
