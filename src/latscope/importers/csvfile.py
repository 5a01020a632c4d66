"""A plain CSV of per-packet nanosecond timestamps -> a latscope run.

The minimal file is ``seq,send_ns,rx_ns``; ``sched_ns`` and ``rx_user_ns``
are optional, and so are the other contract columns by their own names
(``wake_ns, tx_sw_ns, tx_hw_ns, rx_sw_ns, rx_hw_ns``) and ``stream``.
``rx_ns`` is a software (kernel) receive time and lands in rx_sw_ns. An
empty cell is a missing timestamp; a row without any receive time is a lost
packet. Unknown columns are refused, so a misspelt ``shed_ns`` cannot vanish
silently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from latscope.errors import FormatError
from latscope.importers.common import Imported, RawFile, build, text_head
from latscope.safetext import printable, quote
from latscope.store.runfile import MAX_STORED_PERIOD_NS
from latscope.store.samples import MISSING, TIME_COLUMNS

#: Column names accepted in the header, and where each lands.
ALIASES = {"rx_ns": "rx_sw_ns"}
ACCEPTED = ("seq", "stream", *TIME_COLUMNS, *ALIASES)
REQUIRED = ("seq", "send_ns")
RECEIVE = ("rx_ns", "rx_sw_ns", "rx_hw_ns")


def sniff(head: bytes, complete: bool, where: Path) -> None:
    """FormatError unless ``head`` (the file's first bytes) starts with a valid header line of text."""
    _header_names(head, complete, where)


def _header_names(head: bytes, complete: bool, where: Path) -> list[str]:
    text = text_head(head, complete, where, "a CSV file")
    end = text.find("\n")
    if end < 0 and not complete:
        raise FormatError(f"{where}: not a latscope CSV (no header line in the first {len(head)} bytes)")
    first = (text if end < 0 else text[:end]).lstrip("\ufeff").strip("\r")
    names = [h.strip() for h in first.split(",")]
    _check_header(names, where)
    return names


def parse(raw: RawFile) -> Imported:
    """Parse a CSV with a header line of column names."""
    where = raw.path
    # Only the header is needed as text; the rows go to Arrow's parser as a byte stream.
    names = _header_names(raw.head, len(raw.head) == raw.content_size, where)
    cols = _read_columns(raw, names)
    seq = cols["seq"]
    stream = cols.get("stream", np.zeros(len(seq), dtype=np.int64))
    # Files written in order (the usual case) need no sort and no copy.
    in_order = bool(np.all(stream[1:] == stream[0])) and bool(np.all(seq[1:] > seq[:-1]))
    if not in_order:
        order = np.lexsort((seq, stream))
        seq, stream = seq[order], stream[order]
        same = (seq[1:] == seq[:-1]) & (stream[1:] == stream[:-1])
        if same.any():
            raise FormatError(f"{where}: seq {int(seq[1:][same][0])} appears more than once")
        cols = {n: (c if n in ("seq", "stream") else c[order]) for n, c in cols.items()}
    times = {ALIASES.get(n, n): cols[n] for n in names if n not in ("seq", "stream")}
    if np.any((stream < 0) | (stream > 0x7FFFFFFF)):
        raise FormatError(f"{where}: stream must be between 0 and 2147483647")
    built, counts = build(seq, times, stream=stream, arrival="rx_best",
                          tx_recorded=any(n in names for n in ("tx_sw_ns", "tx_hw_ns")))
    given = [n for n in names if n not in ("seq", "stream")]
    notes = [f"columns given: {', '.join(given)}"]
    if "rx_ns" in names:
        notes.append("rx_ns is taken as a software receive timestamp and stored as rx_sw_ns")
    missing = [c for c in TIME_COLUMNS if c not in times]
    if missing:
        notes.append(f"not in the file, stored as null: {', '.join(missing)}")
    return Imported(built, counts, source={"tool": "csv", "metric": "one-way latency", "columns": given,
                                           "notes": notes},
                    config={"period_ns": _period(times.get("sched_ns")), "count": len(seq)})


def _read_columns(raw: RawFile, names: list[str]) -> dict[str, np.ndarray]:
    """Every column as int64 (MISSING for empty cells), read in streaming batches.

    Arrow's one-shot reader keeps every parsed block of the file at once
    (gigabytes for ten million lines); batch by batch, only the integer
    columns themselves stay.
    """
    where = raw.path
    # The line count (taken while the file was hashed) bounds the rows, so that
    # every column is allocated once and filled in place (no concatenation).
    capacity = raw.lines + 1
    out = {n: np.empty(capacity, dtype=np.int64) for n in names}
    rows = 0
    try:
        with raw.open() as stream:
            # block_size also caps a row: a line longer than 8 MiB is an error, not a buffer that grows.
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=8 << 20),
                convert_options=pacsv.ConvertOptions(column_types={n: pa.int64() for n in names}),
            )
            for batch in reader:
                k = batch.num_rows
                if rows + k > capacity:
                    raise FormatError(f"{where}: the file changed while it was read")
                for i, n in enumerate(names):
                    col = batch.column(i)
                    if col.null_count and n in ("seq", "stream"):
                        row = rows + int(pc.index(pc.is_null(col), True).as_py())
                        raise FormatError(f"{where}: line {row + 2}: {n} is empty")
                    out[n][rows:rows + k] = pc.fill_null(col, MISSING).to_numpy(zero_copy_only=False)
                rows += k
    except pa.ArrowInvalid as exc:
        raise FormatError(f"{where}: malformed CSV: {_explain(str(exc), names)}") from None
    except OSError as exc:
        raise FormatError(f"{where}: cannot read ({exc})") from None
    if rows == 0:
        raise FormatError(f"{where}: the CSV has a header but no rows")
    return {n: a[:rows] for n, a in out.items()}


def _check_header(names: list[str], where: object) -> None:
    if not names or names == [""]:
        raise FormatError(f"{where}: the first line must name the columns (seq,send_ns,rx_ns)")
    unknown = [n for n in names if n not in ACCEPTED]
    if unknown:
        raise FormatError(f"{where}: unknown column {quote(unknown[0])} in the header; accepted: {', '.join(ACCEPTED)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise FormatError(f"{where}: column {quote(repeated[0])} appears twice in the header")
    absent = [n for n in REQUIRED if n not in names]
    if absent:
        raise FormatError(f"{where}: the header lacks the required column {absent[0]!r} (need seq,send_ns,rx_ns)")
    if not any(n in names for n in RECEIVE):
        raise FormatError(f"{where}: the header names no receive time (rx_ns, rx_sw_ns or rx_hw_ns)")
    if "rx_ns" in names and "rx_sw_ns" in names:
        raise FormatError(f"{where}: give rx_ns or rx_sw_ns, not both (rx_ns is stored as rx_sw_ns)")


def _explain(message: str, names: list[str]) -> str:
    # Arrow says "In CSV column #1: ..."; users think in column names.
    # Arrow quotes the offending row or cell, which may be megabytes long: only its start is shown.
    line = message.splitlines()[0] if message.strip() else "unreadable"
    prefix = "In CSV column #"
    if line.startswith(prefix):
        num, _, rest = line[len(prefix):].partition(":")
        if num.isdigit() and int(num) < len(names):
            line = f"column {names[int(num)]}:{rest.replace('CSV conversion error to int64:', '')}"
    return printable(line[:160]) + (f"... ({len(line)} characters)" if len(line) > 160 else "")


def _period(sched: np.ndarray | None) -> int | None:
    """The period when sched_ns is a regular grid (the median step), else None."""
    if sched is None:
        return None
    s = sched[sched != MISSING]
    if len(s) < 2:
        return None
    step = int(np.median(np.diff(np.sort(s))))
    # A "period" outside what a run can have (docs/format.md) is no period: the grid is not regular.
    return step if 0 < step <= MAX_STORED_PERIOD_NS else None
