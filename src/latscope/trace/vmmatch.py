"""Finding one packet's events in a trace by other means than its markers: keys, runs, order.

The helpers of latscope.trace.vmpath: the last event of a key before a row,
a thread's run covering an instant and the wakeup before it, and the in-order
matching of receive calls to socket deliveries (on the guest, and on the host
for packets from the tap, UDP copies with the checksum and records no
skb_copy_datagram_iovec, so a receive call cannot be tied to its skb).
"""

from __future__ import annotations

import numpy as np

from latscope.store.samples import MISSING
from latscope.trace.model import Segments, Timeline, next_keyed, prev_row
from latscope.trace.stages import _lookup, markers
from latscope.trace.table import NONE

RECV_EXITS = ("sys_exit_recvmsg", "sys_exit_recvfrom")


def prev_keyed(rows: np.ndarray, keys: np.ndarray, before: np.ndarray, want: np.ndarray) -> np.ndarray:
    """For each query, the last of ``rows`` (sorted) whose key equals ``want`` and row < ``before``; -1 if none."""
    out = np.full(len(before), -1, np.int64)
    if len(rows) == 0:
        return out
    for k in np.unique(want):
        sel = np.flatnonzero(want == k)
        r = rows[keys == k]
        if len(r) == 0:
            continue
        pos = np.searchsorted(r, before[sel], side="left") - 1
        out[sel] = np.where(pos >= 0, r[np.maximum(pos, 0)], -1)
    return out


def covering(segs: Segments, pid: int, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, cpu) of the run of ``pid`` that covers each ``ts``; (NONE, -1) where it was not running."""
    sel = np.flatnonzero(segs.pid == pid)
    if len(sel) == 0:
        return np.full(len(ts), NONE, np.int64), np.full(len(ts), -1, np.int64)
    o = sel[np.argsort(segs.start[sel], kind="stable")]
    k = np.searchsorted(segs.start[o], ts, side="right") - 1
    kk = o[np.maximum(k, 0)]
    ok = (k >= 0) & (segs.end[kk] >= ts)
    return np.where(ok, segs.start[kk], NONE), np.where(ok, segs.cpu[kk].astype(np.int64), -1)


def last_wake(t, pid: int, ts: np.ndarray) -> np.ndarray:
    """Row of the last sched_waking of ``pid`` at or before each ``ts`` (-1 if none)."""
    wk = t.rows("sched_waking")
    wk = wk[t.nums[wk, 0] == pid]
    if len(wk) == 0:
        return np.full(len(ts), -1, np.int64)
    k = np.searchsorted(t.ts[wk], ts, side="right") - 1
    return np.where(k >= 0, wk[np.maximum(k, 0)], -1)


def stream_deliveries(tl: Timeline, dev: str | None = None) -> tuple[np.ndarray, int, str]:
    """Rows of netif_receive_skb that reached a socket: the stream's length, not dropped (on ``dev``, or
    the device most of them came in on)."""
    t = tl.table
    rx = t.rows("netif_receive_skb")
    if len(rx) == 0:
        return rx, 0, ""
    devs = t.strs[rx, 0]
    keep = rx[devs == t.string_id(dev)] if dev else rx[devs != t.string_id("lo")]
    if len(keep) == 0:
        return keep, 0, ""
    lens, counts = np.unique(t.nums[keep, 1], return_counts=True)
    length = int(lens[counts.argmax()])
    devs, dcounts = np.unique(t.strs[keep][t.nums[keep, 1] == length, 0], return_counts=True)
    dev_id = int(devs[dcounts.argmax()])
    # the stream's packets, and its larger hello and end packets; not ARP or neighbour discovery
    sel = keep[(t.nums[keep, 1] >= length) & (t.strs[keep, 0] == dev_id)]
    # dropped: the next event of that skb address (a receive or a free) is a kfree_skb
    frees = t.rows("kfree_skb")
    if len(frees):
        both = np.concatenate([rx, frees])
        both.sort()
        nxt = next_keyed(both, t.nums[both, 0], sel, t.nums[sel, 0])
        dropped = (nxt >= 0) & np.isin(nxt, frees)
        sel = sel[~dropped]
    return sel, length, t.string(dev_id)


def socket_deliveries(tl: Timeline, devices: list[str]) -> np.ndarray:
    """Rows of netif_receive_skb on one of ``devices`` that a UDP socket callback follows on the same CPU.

    The host trace holds every namespace's traffic; these are the packets of this VM's network
    that reached a socket, whichever of its devices delivered them.
    """
    t = tl.table
    rx = t.rows("netif_receive_skb")
    ids = [i for i in (t.string_id(d) for d in devices) if i >= 0]
    if len(rx) == 0 or not ids:
        return np.zeros(0, np.int64)
    ours = rx[np.isin(t.strs[rx, 0], ids)]
    ready = t.rows("sk_data_ready")
    ready = ready[t.nums[ready, 1] == 17]
    cpu = t.cpu[ours].astype(np.int64)
    nxt = next_keyed(ready, t.cpu[ready].astype(np.int64), ours, cpu)
    nrx = next_keyed(rx, t.cpu[rx].astype(np.int64), ours, cpu)
    return ours[(nxt >= 0) & ((nrx < 0) | (nxt < nrx))]


def in_order(tl: Timeline, seq: np.ndarray, receiver: int, delivered: np.ndarray,
             what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(rx marker row, receive return row, delivery row, index k) per packet, deliveries matched in order.

    The k-th receive call of ``receiver`` that returned data got the k-th stream packet delivered to
    its socket (one socket, one reader: first in, first out).
    """
    t = tl.table
    rx_seq, rx_rows = markers(tl, "rx")
    rxm = _lookup(rx_seq, rx_rows, seq)
    recvs = t.rows(*RECV_EXITS)
    recvs = recvs[(t.pid[recvs] == receiver) & (t.nums[recvs, 0] > 0)]
    ret = np.where(rxm >= 0, prev_row(recvs, rxm), -1)
    shift, anchors, disagree = fifo_offset(t, receiver, recvs, delivered, ret)
    k = np.searchsorted(recvs, ret) + shift
    k = np.where(k >= 0, k, len(delivered))
    ok = (ret >= 0) & (k < len(delivered))
    got = np.where(ok, delivered[np.minimum(k, max(len(delivered) - 1, 0))] if len(delivered) else -1, -1)
    bad = (got >= 0) & (got > ret)
    notes = []
    if disagree:
        notes.append(f"the {what} receiver's socket queue count was corrected {disagree} times at the {anchors} "
                     "moments it was empty (packets the trace cannot tell apart): matches in order may be off there")
    if bad.any():
        notes.append(f"{int(bad.sum())} {what} receive calls could not be matched to the deliveries in order; "
                     "their stages before the receive call are folded")
    return rxm, ret, np.where(bad, -1, got), k, notes


def fifo_offset(t, receiver: int, recvs: np.ndarray, delivered: np.ndarray,
                at: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Per receive row ``at``: delivery index - receive index; and the moments used, and how often it changed.

    Where the receiver went to sleep inside a receive call its socket was empty: every delivery
    before that moment was received before it. A trace that begins with the stream gives 0; one
    whose start was cut or overwritten gives minus the receives whose delivery it lacks. Each
    receive takes the offset of the last such moment before it (the first one's before the first).
    """
    zero = np.zeros(len(at), np.int64)
    sw = t.rows("sched_switch")
    sw = sw[(t.nums[sw, 0] == receiver) & (t.nums[sw, 4] != MISSING) & ((t.nums[sw, 4] & 0xFFFF) == 1)]
    calls = t.rows("sys_enter_recvmsg", "sys_enter_recvfrom", *RECV_EXITS)
    calls = calls[t.pid[calls] == receiver]
    if len(sw) == 0 or len(calls) == 0:
        return zero, 0, 0
    last = prev_row(calls, sw)
    inside = sw[(last >= 0) & np.isin(t.event[np.maximum(last, 0)],
                                     [t.code(e) for e in ("sys_enter_recvmsg", "sys_enter_recvfrom")])]
    if len(inside) == 0:
        return zero, 0, 0
    offsets = np.searchsorted(delivered, inside) - np.searchsorted(recvs, inside)
    j = np.maximum(np.searchsorted(inside, at) - 1, 0)
    return offsets[j].astype(np.int64), len(inside), int((np.diff(offsets) != 0).sum())


def same_cpu_after(t, name: str, after: np.ndarray) -> np.ndarray:
    """First ``name`` event on the CPU of row ``after`` following it, before the CPU's next netif_receive_skb."""
    rows = t.rows(name)
    have = after >= 0
    cpu = np.where(have, t.cpu[np.maximum(after, 0)], -1)
    out = np.where(have, next_keyed(rows, t.cpu[rows].astype(np.int64), np.maximum(after, 0), cpu), -1)
    b = t.rows("netif_receive_skb")
    nb = np.where(have, next_keyed(b, t.cpu[b].astype(np.int64), np.maximum(after, 0), cpu), -1)
    return np.where((out >= 0) & ((nb < 0) | (out < nb)), out, -1)
