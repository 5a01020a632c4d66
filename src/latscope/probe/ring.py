"""A ring of per-packet slots in shared memory: how an endless worker hands its columns to the controller.

A `run` worker keeps the whole run's columns and writes them when it ends;
`latscope monitor` never ends, so its workers write each packet's values into
a ring file in /dev/shm that the controller maps as well. The file is a
header of HEADER_SLOTS int64 counters followed by one int64 column of
``slots`` items per column name; packet ``seq`` lives at ``seq & (slots - 1)``.

The worker only ever assigns integers into memoryviews of the mapping (no
allocation, no I/O, no pyarrow: the hot path stays as lean as `run`'s). The
controller copies finished slots out, resets them to MISSING (flags to 0),
and moves the *watermark*: the worker refuses anything for a seq below it
(a packet later than the controller waited for, counted in H_LATE), so a
slot is never written after it was handed over. The controller moves the
watermark one poll before it copies the slots below it, so a worker that
checked the old watermark has long finished its store by the time of the copy.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence

from latscope.contract import MISSING

#: Sender: next seq to send (all below it are in the ring). Receiver: packets received.
H_DONE = 0
#: Receiver: highest seq received (-1 none).
H_MAX_SEQ = 1
#: Controller: seqs below this are handed over; the worker refuses to write them.
H_WATERMARK = 2
#: Receiver: duplicates, reordered packets, packets refused as too late, foreign datagrams (running totals).
H_DUPLICATED = 3
H_REORDERED = 4
H_LATE = 5
H_FOREIGN = 6
#: Sender: the absolute time of its first seq (CLOCK_REALTIME ns), once it is known (0 before).
H_BASE_TIME = 7
#: Sender: the first seq it sends.
H_FIRST_SEQ = 8
#: Sender: sends that failed (ENOBUFS, ...), running total. Both: 1 once the loop has ended.
H_SEND_FAILED = 9
H_ENDED = 10
HEADER_SLOTS = 16

SENDER_COLUMNS = ("sched", "wake", "send", "tx_sw", "tx_hw", "flags")
RECEIVER_COLUMNS = ("rx_sw", "rx_hw", "rx_user", "flags")


def ring_bytes(columns: Sequence[str], slots: int) -> int:
    """The size of a ring file for ``columns`` of ``slots`` each."""
    return 8 * (HEADER_SLOTS + len(columns) * slots)


def create_ring(path: str, columns: Sequence[str], slots: int) -> None:
    """Create the ring file: header zero (watermark 0, max seq -1), every slot MISSING, flags 0."""
    if slots <= 0 or slots & (slots - 1):
        raise ValueError("ring slots must be a power of two")
    missing = MISSING.to_bytes(8, "little", signed=True)
    header = bytearray(8 * HEADER_SLOTS)
    header[8 * H_MAX_SEQ:8 * H_MAX_SEQ + 8] = (-1).to_bytes(8, "little", signed=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb", closefd=False) as fh:
            fh.write(header)
            for name in columns:
                fh.write((b"\0" * 8 if name == "flags" else missing) * slots)
    finally:
        os.close(fd)


class Ring:
    """A mapped ring file: ``header`` and one memoryview per column (``cols[name][seq & mask]``)."""

    def __init__(self, path: str, columns: Sequence[str], slots: int) -> None:
        self.slots = slots
        self.mask = slots - 1
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_size != ring_bytes(columns, slots):
                raise ValueError(f"{path}: not a ring of {len(columns)} columns x {slots} slots")
            self._mm = mmap.mmap(fd, ring_bytes(columns, slots))
        finally:
            os.close(fd)
        whole = memoryview(self._mm).cast("q")
        self._whole = whole
        self.header = whole[:HEADER_SLOTS]
        self.cols = {name: whole[HEADER_SLOTS + i * slots:HEADER_SLOTS + (i + 1) * slots]
                     for i, name in enumerate(columns)}
        self.mm = self._mm

    def close(self) -> None:
        """Release the views and the mapping (every exported view must be gone first)."""
        for v in self.cols.values():
            v.release()
        self.header.release()
        self._whole.release()
        self._mm.close()
