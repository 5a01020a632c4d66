"""Making a campaign's runs: one `latscope run` process per run, a state file after each, resumable.

The state lives next to the results (``<results>/.campaigns/NAME/state.json``,
written atomically after every change). Every run is also tagged with its
campaign, cell, repeat and plan fingerprint, so the store itself says which
runs exist: a runner killed at any point (SIGKILL included) and started again
first adopts every complete run the store holds for a planned (cell, repeat),
including one stored after the last state write, then makes exactly the
missing ones. A run's process dies with the runner (PR_SET_PDEATHSIG: it
stores what it measured as an interrupted run, which is kept but never counted).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latscope.errors import ConfigError, StoreError
from latscope.experiment.campaign import Campaign, PlannedRun, argv, expected_seconds
from latscope.files import held_lock, read_regular, reason, write_atomic
from latscope.libc import LIBC
from latscope.process import pid_alive
from latscope.safetext import printable
from latscope.stopping import Stopped
from latscope.store.layout import ResultsStore, StoredRun

STATE_FORMAT = "latscope-campaign-state"
STATE_SCHEMA = 1
MAX_STATE_BYTES = 64 << 20
#: How long a resumed campaign waits for the run process of a killed runner to finish storing.
ORPHAN_WAIT_S = 120.0
Notify = Callable[[str], None]


def state_dir(root: Path, campaign: Campaign) -> Path:
    """Where a campaign keeps its state; a trial (--set/--repeats) beside it, one directory per trial plan,
    so that trying a campaign small never stands in the way of making it for real."""
    d = root / ".campaigns" / campaign.name
    return d / "trials" / campaign.fingerprint if campaign.trial else d


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


@dataclass
class State:
    """The campaign's state file: per planned run its status, stored run and attempts."""

    path: Path
    doc: dict[str, Any]

    @classmethod
    def open(cls, root: Path, campaign: Campaign, *, create: bool) -> State:
        path = state_dir(root, campaign) / "state.json"
        try:
            raw = read_regular(path, MAX_STATE_BYTES)
        except FileNotFoundError:
            raw = None
        except OSError as exc:
            raise StoreError(f"cannot read the campaign state {path}: {reason(exc)}") from None
        if raw is None:
            doc: dict[str, Any] = {"format": STATE_FORMAT, "schema_version": STATE_SCHEMA, "campaign": campaign.name,
                                   "plan": campaign.fingerprint, "file": str(campaign.path.resolve()),
                                   "created": now_iso(), "runs": {}}
        else:
            try:
                doc = json.loads(raw)
                if doc.get("format") != STATE_FORMAT or not isinstance(doc.get("runs"), dict):
                    raise ValueError("not a campaign state")
            except (ValueError, AttributeError):
                raise StoreError(f"{path} is not a latscope campaign state (move it away to start afresh)") from None
            if doc.get("schema_version") != STATE_SCHEMA:
                raise StoreError(f"{path}: campaign state version {doc.get('schema_version')!r}; this latscope "
                                 f"reads version {STATE_SCHEMA}")
            problem = _bad_entry(doc["runs"])
            if problem:
                raise StoreError(f"{path}: not a latscope campaign state: {problem} (hand-edited? move it away "
                                 "to start afresh)")
            if doc.get("plan") != campaign.fingerprint:
                raise ConfigError(
                    f"campaign {campaign.name}: its runs so far were made for another plan ({doc.get('plan')}, "
                    f"now {campaign.fingerprint}): the file changed since; give the campaign a new name, or "
                    f"move {path.parent} away to start again")
        state = cls(path, doc)
        for run in campaign.plan():
            entry = doc["runs"].setdefault(run.key, {"status": "pending", "attempts": []})
            entry.update({"index": run.index, "cell": run.cell.name, "repeat": run.repeat})
        if create:
            state.save()
        return state

    def entry(self, run: PlannedRun) -> dict[str, Any]:
        return self.doc["runs"][run.key]

    def save(self) -> None:
        self.doc["updated"] = now_iso()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(self.doc, indent=1, sort_keys=True) + "\n")
        except OSError as exc:
            raise StoreError(f"cannot write the campaign state {self.path}: {reason(exc)}") from None

    def counts(self) -> dict[str, int]:
        out = {"done": 0, "pending": 0, "failed": 0, "running": 0}
        for entry in self.doc["runs"].values():
            out[entry["status"]] = out.get(entry["status"], 0) + 1
        return out


STATUSES = ("pending", "running", "done", "failed")


def _bad_entry(runs: dict[str, Any]) -> str | None:
    """What is wrong with the state's runs (entries of the shape the runner writes), or None."""
    for key, entry in runs.items():
        where = f"runs[{printable(str(key))[:60]!r}]"
        if not isinstance(entry, dict):
            return f"{where} is not an object"
        if entry.get("status") not in STATUSES:
            return f"{where}: status {printable(str(entry.get('status')))[:40]!r} is none of {', '.join(STATUSES)}"
        attempts = entry.get("attempts")
        if not isinstance(attempts, list) or not all(isinstance(a, dict) for a in attempts):
            return f"{where}: attempts is not a list of objects"
        pid = entry.get("pid")
        if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0):
            return f"{where}: pid is not a process id"
        for k in ("run_id", "lost_run"):
            if entry.get(k) is not None and not isinstance(entry[k], str):
                return f"{where}: {k} is not a run id"
    return None


@contextlib.contextmanager
def locked(root: Path, campaign: Campaign) -> Iterator[None]:
    """One runner per campaign (or trial) and results root at a time."""
    d = state_dir(root, campaign)
    with held_lock(d / "lock", f"campaign {campaign.name} is being run by another process (lock {d / 'lock'})",
                   f"cannot create the campaign's directory {d}"):
        yield


def campaign_runs(store: ResultsStore, campaign: Campaign) -> dict[str, list[StoredRun]]:
    """The store's runs of this plan, by planned run key, oldest first."""
    out: dict[str, list[StoredRun]] = {}
    want = {f"campaign={campaign.name}", f"plan={campaign.fingerprint}"}
    runs, _bad = store.runs()
    for run in runs:
        tags = set(run.record.tags)
        if not want <= tags:
            continue
        cell = next((t[5:] for t in tags if t.startswith("cell=")), None)
        repeat = next((t[7:] for t in tags if t.startswith("repeat=")), None)
        if cell is not None and repeat is not None:
            out.setdefault(f"{cell}/{repeat}", []).append(run)
    return out


def reconcile(state: State, store: ResultsStore, campaign: Campaign, notify: Notify | None = None) -> None:
    """Make the state agree with the store: adopt complete runs, reopen runs whose process is gone."""
    for entry in state.doc["runs"].values():
        pid = entry.get("pid")
        if entry["status"] == "running" and pid and pid_alive(pid) and _is_latscope(pid):
            if notify:
                notify(f"waiting for run process {pid} of the previous runner to finish storing")
            deadline = time.monotonic() + ORPHAN_WAIT_S
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
    stored = campaign_runs(store, campaign)
    for key, entry in state.doc["runs"].items():
        complete = [r for r in stored.get(key, []) if r.record.status == "complete"]
        if entry["status"] == "done" and entry.get("run_id") not in {r.run_id for r in complete}:
            # Its run left the store (deleted, moved): the campaign is missing it, so it is made again.
            entry.update(status="pending", lost_run=entry.get("run_id"))
            entry.pop("run_id", None)
        if entry["status"] != "done" and complete:
            entry.update(status="done", run_id=complete[0].run_id, adopted=True)
            if entry["attempts"] and entry["attempts"][-1].get("outcome") in (None, "interrupted"):
                # The run process finished storing after the runner was stopped (or ended by its signal
                # after the measurement): that attempt made the run.
                entry["attempts"][-1].update(outcome="done", run_id=complete[0].run_id,
                                             ended=entry["attempts"][-1].get("ended") or now_iso(),
                                             note="stored after the runner was stopped")
                entry["attempts"][-1].pop("error", None)
        elif entry["status"] == "running":
            entry["status"] = "pending"
            if entry["attempts"] and entry["attempts"][-1].get("outcome") is None:
                partial = [r.run_id for r in stored.get(key, []) if r.record.status != "complete"]
                entry["attempts"][-1].update(outcome="interrupted", ended=now_iso(),
                                             error="the campaign runner was stopped during this run",
                                             **({"partial_runs": partial} if partial else {}))
        entry.pop("pid", None)
    state.save()


def _is_latscope(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"latscope" in fh.read()
    except OSError:
        return False


@dataclass(frozen=True)
class Attempt:
    returncode: int
    run_ids: tuple[str, ...]
    status: str | None
    error: str | None


PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> Callable[[], None]:
    """Between fork and exec of a run: end with the runner, also if it died before this was armed."""

    def arm() -> None:
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the runner is already gone: no signal would ever come
            os._exit(1)

    return arm


def run_argv(campaign: Campaign, run: PlannedRun, root: Path) -> list[str]:
    """The `latscope run` command line of one planned run."""
    tags = [a for t in campaign.run_tags(run) for a in ("--tag", t)]
    return [sys.executable, "-m", "latscope.cli.main", "run", *argv(run.cell.options),
            "--name", campaign.run_name(run), *tags, "--results", str(root), "--json", "--quiet"]


def launch(cmd: list[str], log: Path, on_start: Callable[[int], None]) -> Attempt:
    """Run one `latscope run` to its end; its stderr goes to ``log``; a stop of ours is passed on to it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as err:
        # preexec_fn runs one prctl between fork and exec; the runner has no other threads.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                preexec_fn=_die_with(os.getpid()))  # noqa: PLW1509
        on_start(proc.pid)
        try:
            out, _ = proc.communicate()
        except BaseException:
            # Ctrl-C reaches the run through the terminal; SIGTERM to us alone does not: pass it on, and let
            # the run store what it measured before we go.
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(BaseException):
                proc.wait(timeout=ORPHAN_WAIT_S)
            raise
    run_ids: tuple[str, ...] = ()
    status = None
    try:
        doc = json.loads(out.decode(errors="replace")) if out.strip() else {}
        docs = doc.get("runs", [doc]) if isinstance(doc, dict) else []
        run_ids = tuple(str(d["run_id"]) for d in docs if isinstance(d, dict) and d.get("run_id"))
        status = next((d.get("status") for d in docs if isinstance(d, dict)), None)
    except ValueError:
        pass
    error = None
    if proc.returncode != 0:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln] or lines
        error = printable(errors[-1])[:300] if errors else f"exit status {proc.returncode}"
    return Attempt(proc.returncode, run_ids, status, error)


class Runner:
    """Makes the runs of ``campaign`` that the state does not have yet."""

    def __init__(self, campaign: Campaign, store: ResultsStore, notify: Notify | None = None,
                 retry_failed: bool = False, max_runs: int | None = None) -> None:
        self.max_runs = max_runs
        self.campaign = campaign
        self.store = store
        self.notify = notify or (lambda _t: None)
        self.retry_failed = retry_failed

    def run(self) -> State:
        with locked(self.store.root, self.campaign):
            state = State.open(self.store.root, self.campaign, create=True)
            reconcile(state, self.store, self.campaign, self.notify)
            plan = self.campaign.plan()
            todo = [r for r in plan if state.entry(r)["status"] == "pending"
                    or (self.retry_failed and state.entry(r)["status"] == "failed")]
            done_before = len(plan) - len(todo)
            if self.max_runs is not None and len(todo) > self.max_runs:
                self.notify(f"making {self.max_runs} of the {len(todo)} runs to do (--max-runs)")
                todo = todo[:self.max_runs]
            if done_before and todo:
                self.notify(f"resuming: {done_before} of {len(plan)} runs already made")
            spent: list[float] = []
            for i, run in enumerate(todo):
                left = len(todo) - i
                each = sum(spent) / len(spent) if spent else expected_seconds(run.cell.options)
                self.notify(f"run {done_before + i + 1} of {len(plan)}: cell {run.cell.name}, repeat "
                            f"{run.repeat + 1}/{self.campaign.repeats}; ETA {eta(each * left)}")
                t0 = time.monotonic()
                self._make(state, run)
                spent.append(time.monotonic() - t0)
            return state

    def _make(self, state: State, run: PlannedRun) -> None:
        entry = state.entry(run)
        entry["status"] = "pending"
        tries = 1 + self.campaign.retries
        for k in range(tries):
            attempt: dict[str, Any] = {"started": now_iso(), "outcome": None}
            entry["attempts"].append(attempt)
            entry["status"] = "running"
            state.save()
            n = len(entry["attempts"])
            log = state.path.parent / "logs" / f"{run.index:04d}-{run.cell.name}-{run.repeat}-{n}.stderr"

            def started(pid: int) -> None:
                entry["pid"] = pid
                state.save()

            try:
                result = launch(run_argv(self.campaign, run, self.store.root), log, started)
            except (Stopped, KeyboardInterrupt):
                attempt.update(outcome="interrupted", ended=now_iso(), error="the campaign was stopped")
                entry["status"] = "pending"
                entry.pop("pid", None)
                state.save()
                raise
            entry.pop("pid", None)
            attempt.update(ended=now_iso(), exit=result.returncode, run_ids=list(result.run_ids),
                           log=str(log.relative_to(state.path.parent)))
            if result.returncode == 0 and result.run_ids and result.status == "complete":
                attempt["outcome"] = "done"
                entry.update(status="done", run_id=result.run_ids[0], run_ids=list(result.run_ids))
                state.save()
                return
            attempt.update(outcome="failed", error=result.error or f"run status {result.status}")
            entry["status"] = "failed" if k == tries - 1 else "pending"
            state.save()
            self.notify(f"run {run.index + 1} (cell {run.cell.name}, repeat {run.repeat + 1}) failed: "
                        f"{attempt['error']}" + ("; retrying" if k < tries - 1 else ""))


def eta(seconds: float) -> str:
    """A duration for people: 40s, 3m05s, 1h15m."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def done_runs(campaign: Campaign, store: ResultsStore) -> dict[str, str]:
    """Planned run key -> the stored complete run that made it.

    The store decides, with the state as a tie-breaker: a run stored just
    before a runner was killed (the state not told yet) counts all the same.
    """
    try:
        state: State | None = State.open(store.root, campaign, create=False)
    except StoreError:
        state = None
    stored = campaign_runs(store, campaign)
    out = {}
    for run in campaign.plan():
        complete = {r.run_id for r in stored.get(run.key, []) if r.record.status == "complete"}
        entry = state.entry(run) if state is not None else {}
        if entry.get("status") == "done" and entry.get("run_id") in complete:
            out[run.key] = entry["run_id"]
        elif complete:
            out[run.key] = min(complete)
    return out


def status(campaign: Campaign, store: ResultsStore) -> dict[str, Any]:
    """Per cell: runs done, to do, failed; the stored run ids; attempts that did not count."""
    state = State.open(store.root, campaign, create=False)
    done = done_runs(campaign, store)
    cells: dict[str, dict[str, Any]] = {}
    for run in campaign.plan():
        entry = state.entry(run)
        st = "done" if run.key in done else "pending" if entry["status"] == "done" else entry["status"]
        c = cells.setdefault(run.cell.name, {"cell": run.cell.name, "levels": dict(run.cell.levels), "done": 0,
                                             "to_do": 0, "failed": 0, "running": 0, "run_ids": [], "errors": [],
                                             "interrupted_attempts": 0})
        key = {"done": "done", "failed": "failed", "running": "running"}.get(st, "to_do")
        c[key] += 1
        if st == "done":
            c["run_ids"].append(done[run.key])
        if st == "failed":
            c["errors"].append(entry["attempts"][-1].get("error") if entry["attempts"] else "failed")
        c["interrupted_attempts"] += sum(1 for a in entry.get("attempts", []) if a.get("outcome") == "interrupted")
    totals = {k: sum(c[k] for c in cells.values()) for k in ("done", "to_do", "failed", "running")}
    return {"campaign": campaign.name, "plan": campaign.fingerprint, "state": str(state.path),
            "runs": len(campaign.plan()), **totals, "cells": list(cells.values()), "run_ids": done}
