"""Reading only the events a breakdown needs from a long run's events.parquet.

A 15-minute traced run holds 36-60 million events; a breakdown needs far
fewer of them, and exactly which is known before the full columns are
decoded:

1. A narrow scan of every row group (``ts``, ``cpu``, ``pid``, ``event``,
   ``a0``, ``a1``; about 16 bytes kept per event) finds the markers, hence
   the sender and receiver, and every row's CPU and task.
2. The packets: every row of ``PATH_ALWAYS``; the wakeups of the receiver
   (``sched_waking`` of other tasks never match); the sender's send calls
   and device queueing; the receiver-side skb events of the sender's skb
   addresses only (the others never match), and after each of its
   netif_receive_skb the next netif_receive_skb and the next two
   sk_data_ready on that CPU (the bounds the socket callback is found
   between); every event of the receiver and, on each CPU, the event just
   before each of them and the last recorded switch before it (an
   unrecorded switch to the receiver is placed from that pair and moved by
   the priority that switch set), so the receiver's runs, hence every
   packet's stages and the stage baselines, come out as from the whole trace.
3. The late packets' windows: which packets are late is decided on the
   run's samples (the metric and threshold need no trace), so their windows
   are known before reading: from the earliest to the latest of the
   probe's own timestamps of the packet, widened by ``MARGIN_NS`` on both
   sides, every event; plus, per CPU, the event just before and just after
   each window (what was running when the window opened, and the switch
   that ended it) and the last recorded switch before it.
4. One decode of the full columns of just those rows (read_table with rows).

What cannot be seen outside the windows, and why the breakdown is still
the same as from the whole trace: a stage's culprits are looked up inside
the stage (between two checkpoints of its packet, inside the window); the
task running when a window opens is known from the event before it (its
segment may have started long before: only the part inside the stage
counts); an interrupt that started more than 10 ms before a stage is not
counted by the breakdown (model.window_shares), and one that started
inside the margin ends inside it unless it lasted over ``MARGIN_NS``
(20 ms, not an interrupt). ``covers`` checks after the analysis that every
late packet's checkpoints (those fully traced, which include every explained
one) lay inside its window with at least ``MIN_MARGIN_NS`` to spare; when
one did not (a checkpoint far outside the probe's own timestamps), the
caller reads the whole trace instead.

Timestamps: windows come from the probe's CLOCK_REALTIME and are mapped
onto the trace clock with the run's recorded offset (``to_realtime_ns`` in
the table's metadata); a table without one is read whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from latscope.errors import FormatError
from latscope.store.samples import MISSING, Samples
from latscope.store.versioned import open_parquet
from latscope.trace.fields import PHASES
from latscope.trace.model import rows_per_cpu
from latscope.trace.stages import commonest
from latscope.trace.table import (
    EVENTS_MAGIC,
    EVENTS_SCHEMA_VERSION,
    EventTable,
    dictionary_ids,
    file_meta,
    read_table,
    row_group_bounds,
)

#: Every row of these events is kept (the stages are located on them, with bounds and keys of other tasks).
PATH_ALWAYS = ("print", "sched_wakeup")
#: Rows of these events are kept when the sender made them.
SENDER_EVENTS = ("sys_enter_sendto", "sys_enter_sendmsg", "sys_exit_sendto", "sys_exit_sendmsg", "net_dev_queue")
#: Rows of these events are kept when their skb address is one the sender queued.
SKB_EVENTS = ("net_dev_start_xmit", "netif_rx", "napi_gro_receive_entry", "napi_gro_frags_entry",
              "netif_receive_skb_entry")
#: Every event this far before and after a late packet's probe timestamps is read.
MARGIN_NS = 20_000_000
#: A packet's checkpoints must lie this far inside its window (interrupts are looked up 10 ms back).
MIN_MARGIN_NS = 10_000_001
#: Probe timestamps that bound a packet's life (those present).
PROBE_TIMES = ("sched_ns", "wake_ns", "send_ns", "rx_sw_ns", "rx_hw_ns", "rx_user_ns")


@dataclass(frozen=True)
class Scan:
    """The narrow columns of every row of an events.parquet."""

    path: Path
    ts: np.ndarray          # int64, trace clock
    cpu: np.ndarray         # int16
    task: np.ndarray        # int32: the task the event ran in (a sched_switch: the one switched out)
    event: np.ndarray       # int16, ids into event_names (the ids a whole read gives)
    event_names: tuple[str, ...]
    marker_rows: np.ndarray
    marker_seq: np.ndarray
    marker_phase: np.ndarray
    skb_rows: np.ndarray    # rows of net_dev_queue, netif_receive_skb and SKB_EVENTS
    skb: np.ndarray
    waking_rows: np.ndarray  # rows of sched_waking
    waking_pid: np.ndarray   # the task each wakes
    switch_rows: np.ndarray  # rows of sched_switch
    switch_next: np.ndarray  # the task each switches to
    meta: dict[str, Any]
    _per_cpu: list[np.ndarray] = field(default_factory=list, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.ts)

    def codes(self, *names: str) -> list[int]:
        return [self.event_names.index(n) for n in names if n in self.event_names]

    def counts(self) -> dict[str, int]:
        """Events per name, most frequent first (as EventTable.counts of the whole table)."""
        c = np.bincount(self.event, minlength=len(self.event_names))
        order = np.argsort(-c, kind="stable")
        return {self.event_names[i]: int(c[i]) for i in order if c[i]}

    def marker_pids(self) -> tuple[int, int]:
        """Sender and receiver as the markers show them (stages.trace_pids on the whole table)."""
        out = []
        for phase in ("tx", "rx"):
            sel = self.marker_phase == PHASES[phase]
            rows, seq = self.marker_rows[sel], self.marker_seq[sel]
            _u, first = np.unique(seq, return_index=True)
            out.append(commonest(self.task[rows[first]]))
        return out[0], out[1]

    def per_cpu(self) -> list[np.ndarray]:
        """Per CPU (index = CPU number): its rows, in order (computed once)."""
        if not self._per_cpu and len(self):
            self._per_cpu.extend(rows_per_cpu(self.cpu, int(self.cpu.max()) + 1))
        return self._per_cpu

    def _is(self, *names: str) -> np.ndarray:
        """Mask of the rows of events ``names`` (a lookup table, not a search per row)."""
        lut = np.zeros(max(len(self.event_names), 1), bool)
        lut[self.codes(*names)] = True
        return lut[self.event]

    def path_rows(self, sender: int, receiver: int) -> np.ndarray:
        """Mask of the rows that locate every packet's checkpoints as the whole trace does."""
        n = len(self)
        keep = self._is(*PATH_ALWAYS)
        keep |= self._is(*SENDER_EVENTS) & (self.task == sender)
        keep[self.waking_rows[self.waking_pid == receiver]] = True
        dq = self.codes("net_dev_queue")
        skb_ev = self.event[self.skb_rows]
        skbs = self.skb[np.isin(skb_ev, dq) & (self.task[self.skb_rows] == sender)]
        of_sender = _member(self.skb, skbs)
        follow = np.isin(skb_ev, self.codes(*SKB_EVENTS, "netif_receive_skb")) & of_sender
        keep[self.skb_rows[follow]] = True
        # the socket callback is the first sk_data_ready on the CPU after the packet's netif_receive_skb
        # and before the next netif_receive_skb there (any skb); the next sk_data_ready bounds the wakeup
        rx = self.skb_rows[np.isin(skb_ev, self.codes("netif_receive_skb")) & of_sender]
        nrs, sdr = self._is("netif_receive_skb"), self._is("sk_data_ready")
        # switches: the last recorded one (to another task) before each of the receiver's events (an
        # unrecorded switch to the receiver is moved by the priority of what that one put there); a
        # switch to the receiver is the event just before one of the receiver's, so it is in already
        rec = self._is_rows(self.switch_rows[self.task[self.switch_rows] != self.switch_next])
        if n:
            keep[[0, n - 1]] = True
        for c, on in enumerate(self.per_cpu()):
            if len(on) == 0:
                continue
            mine = np.flatnonzero(self.task[on] == receiver)
            keep[on[:1]] = True
            keep[on[mine]] = True
            keep[on[mine[mine > 0] - 1]] = True
            q = rx[self.cpu[rx] == c]
            for rows, ahead in ((on[nrs[on]], 1), (on[sdr[on]], 2)):
                j = np.searchsorted(rows, q, side="right")
                for d in range(ahead):
                    keep[rows[j[j + d < len(rows)] + d]] = True
            rec_c = on[rec[on]]
            j = np.searchsorted(rec_c, on[mine], side="left") - 1
            keep[rec_c[j[j >= 0]]] = True
        return keep

    def _is_rows(self, rows: np.ndarray) -> np.ndarray:
        mask = np.zeros(len(self), bool)
        mask[rows] = True
        return mask

    def window_rows(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Mask of every row with lo[i] <= ts <= hi[i] for some i, and per CPU the row before and after each
        window."""
        keep = np.zeros(len(self), bool)
        if len(lo) == 0 or len(self) == 0:
            return keep
        o = np.argsort(lo, kind="stable")
        lo, hi = lo[o], np.maximum.accumulate(hi[o])
        # merge overlapping windows: a new one starts where lo passes every earlier hi
        new = np.concatenate([[True], lo[1:] > hi[:-1]])
        start = lo[new]
        end = hi[np.concatenate([np.flatnonzero(new)[1:] - 1, [len(lo) - 1]])]
        r0 = np.searchsorted(self.ts, start, side="left")
        r1 = np.searchsorted(self.ts, end, side="right")
        for a, b in zip(r0.tolist(), r1.tolist(), strict=True):   # merged: at most one per late packet
            keep[a:b] = True
        rec = self._is_rows(self.switch_rows[self.task[self.switch_rows] != self.switch_next])
        for on in self.per_cpu():
            before = np.searchsorted(on, r0, side="left") - 1
            after = np.searchsorted(on, r1, side="left")
            keep[on[before[before >= 0]]] = True
            keep[on[after[after < len(on)]]] = True
            # the last recorded switch before the window: the priority an unrecorded one inside is judged by
            rec_c = on[rec[on]]
            j = np.searchsorted(rec_c, r0, side="left") - 1
            keep[rec_c[j[j >= 0]]] = True
        return keep

    def read(self, keep: np.ndarray) -> EventTable:
        """The full columns of the rows in mask ``keep``; the metadata says what the whole table held
        (``subset``)."""
        t = read_table(self.path, np.flatnonzero(keep))
        return t.with_meta(subset={"events": len(self), "rows_read": len(t), "event_counts": self.counts(),
                                   "event_names": list(self.event_names)})


def _member(values: np.ndarray, of: np.ndarray) -> np.ndarray:
    """Mask of ``values`` that are in ``of`` (binary search in the distinct ``of``)."""
    u = np.unique(of)
    if len(u) == 0:
        return np.zeros(len(values), bool)
    pos = np.minimum(np.searchsorted(u, values), len(u) - 1)
    return u[pos] == values


def scan(path: Path) -> Scan:
    """The narrow scan of every row group of ``path`` (FormatError when it cannot be read)."""
    pf = open_parquet(path, str(path), "trace table", EVENTS_MAGIC, EVENTS_SCHEMA_VERSION)
    try:
        return _scan(path, pf)
    except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
        raise FormatError(f"{path}: corrupt trace table ({exc})") from None


def _scan(path: Path, pf: Any) -> Scan:
    meta = file_meta(pf)
    bounds = row_group_bounds(pf)
    n = int(bounds[-1])
    ts = np.empty(n, np.int64)
    cpu = np.empty(n, np.int16)
    task = np.empty(n, np.int32)
    event = np.empty(n, np.int16)
    events: dict[str, int] = {}
    m_rows: list[np.ndarray] = []
    m_seq: list[np.ndarray] = []
    m_phase: list[np.ndarray] = []
    s_rows: list[np.ndarray] = []
    s_val: list[np.ndarray] = []
    w_rows: list[np.ndarray] = []
    w_pid: list[np.ndarray] = []
    x_rows: list[np.ndarray] = []
    x_next: list[np.ndarray] = []
    for g in range(len(bounds) - 1):
        t = pf.read_row_group(g, columns=["ts", "cpu", "pid", "event", "a0", "a1"])
        out = slice(int(bounds[g]), int(bounds[g + 1]))
        ev = dictionary_ids(t.column("event"), events).astype(np.int16)
        a0 = t.column("a0").fill_null(np.iinfo(np.int64).min).to_numpy()
        pid = t.column("pid").to_numpy()
        ts[out] = t.column("ts").to_numpy()
        cpu[out] = t.column("cpu").to_numpy()
        event[out] = ev
        sw = events.get("sched_switch", -1)
        task[out] = np.where(ev == sw, a0, pid) if sw >= 0 else pid
        pr = events.get("print", -1)
        if pr >= 0:
            k = np.flatnonzero(ev == pr)
            a1 = t.column("a1").fill_null(np.iinfo(np.int64).min).to_numpy()
            m_rows.append(k + bounds[g])
            m_seq.append(a0[k])
            m_phase.append(a1[k])
        wk = events.get("sched_waking", -1)
        if wk >= 0:
            k = np.flatnonzero(ev == wk)
            w_rows.append(k + bounds[g])
            w_pid.append(a0[k])
        if sw >= 0:
            k = np.flatnonzero(ev == sw)
            a1 = t.column("a1").fill_null(np.iinfo(np.int64).min).to_numpy()
            x_rows.append(k + bounds[g])
            x_next.append(a1[k])
        codes = [events[e] for e in ("net_dev_queue", "netif_receive_skb", *SKB_EVENTS) if e in events]
        if codes:
            k = np.flatnonzero(np.isin(ev, codes))
            s_rows.append(k + bounds[g])
            s_val.append(a0[k])
    z = np.zeros(0, np.int64)
    return Scan(path, ts, cpu, task, event, tuple(sorted(events, key=events.__getitem__)),
                np.concatenate([z, *m_rows]), np.concatenate([z, *m_seq]), np.concatenate([z, *m_phase]),
                np.concatenate([z, *s_rows]), np.concatenate([z, *s_val]), np.concatenate([z, *w_rows]),
                np.concatenate([z, *w_pid]), np.concatenate([z, *x_rows]), np.concatenate([z, *x_next]), meta)


def packet_windows(samples: Samples, idx: np.ndarray, to_trace_ns: int) -> tuple[np.ndarray, np.ndarray] | None:
    """[lo, hi] on the trace clock of packets ``idx`` of ``samples``: their probe timestamps +- MARGIN_NS.

    None when a packet has none of the probe's timestamps.
    """
    cols = [samples[c][idx].astype(np.int64) for c in PROBE_TIMES if c in samples.columns]
    if not cols:
        return None
    stack = np.stack(cols, axis=1)
    present = stack != MISSING
    if not present.any(axis=1).all():
        return None
    big = np.iinfo(np.int64).max
    lo = np.where(present, stack, big).min(axis=1)
    hi = np.where(present, stack, -big).max(axis=1)
    return lo + to_trace_ns - MARGIN_NS, hi + to_trace_ns + MARGIN_NS


def covers(lo: np.ndarray, hi: np.ndarray, times: np.ndarray) -> bool:
    """Every packet's checkpoints (rows of ``times``, probe clock, MISSING where unseen) inside its
    window [lo, hi] (same clock) with MIN_MARGIN_NS to spare."""
    seen = times != MISSING
    big = np.iinfo(np.int64).max
    first = np.where(seen, times, big).min(axis=1)
    last = np.where(seen, times, -big).max(axis=1)
    ok = ~seen.any(axis=1) | ((first - lo >= MIN_MARGIN_NS) & (hi - last >= MIN_MARGIN_NS))
    return bool(ok.all())
