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

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from latscope.errors import FormatError
from latscope.importers.common import Imported, RawFile, build, text_of
from latscope.store.samples import MISSING, TIME_COLUMNS

#: Column names accepted in the header, and where each lands.
ALIASES = {"rx_ns": "rx_sw_ns"}
ACCEPTED = ("seq", "stream", *TIME_COLUMNS, *ALIASES)
REQUIRED = ("seq", "send_ns")
RECEIVE = ("rx_ns", "rx_sw_ns", "rx_hw_ns")


def parse(raw: RawFile) -> Imported:
    """Parse a CSV with a header line of column names."""
    where = raw.path
    text = text_of(raw)
    first = text.lstrip("\ufeff").split("\n", 1)[0].strip("\r")
    names = [h.strip() for h in first.split(",")]
    _check_header(names, where)
    try:
        table = pacsv.read_csv(
            io.BytesIO(raw.data),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.int64() for n in names}),
        )
    except pa.ArrowInvalid as exc:
        raise FormatError(f"{where}: malformed CSV: {_explain(str(exc), names)}") from None
    if table.num_rows == 0:
        raise FormatError(f"{where}: the CSV has a header but no rows")
    for name in ("seq", *(("stream",) if "stream" in names else ())):
        if table.column(name).null_count:
            row = int(pc.index(pc.is_null(table.column(name)), True).as_py()) + 2
            raise FormatError(f"{where}: line {row}: {name} is empty")
    cols = {n: pc.fill_null(table.column(n), MISSING).to_numpy() for n in names}
    seq = cols["seq"]
    stream = cols.get("stream", np.zeros(len(seq), dtype=np.int64))
    order = np.lexsort((seq, stream))
    key = np.stack([stream[order], seq[order]], axis=1)
    dup = np.flatnonzero(np.all(key[1:] == key[:-1], axis=1))
    if len(dup):
        raise FormatError(f"{where}: seq {int(key[dup[0] + 1][1])} appears more than once")
    times = {ALIASES.get(n, n): cols[n][order] for n in names if n not in ("seq", "stream")}
    if np.any((stream < 0) | (stream > 0x7FFFFFFF)):
        raise FormatError(f"{where}: stream must be between 0 and 2147483647")
    built, counts = build(seq[order], times, stream=stream[order], arrival="rx_best",
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
                    config={"period_ns": _period(times.get("sched_ns")), "count": int(len(seq))})


def _check_header(names: list[str], where: object) -> None:
    if not names or names == [""]:
        raise FormatError(f"{where}: the first line must name the columns (seq,send_ns,rx_ns)")
    unknown = [n for n in names if n not in ACCEPTED]
    if unknown:
        raise FormatError(f"{where}: unknown column {unknown[0]!r} in the header; accepted: {', '.join(ACCEPTED)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise FormatError(f"{where}: column {repeated[0]!r} appears twice in the header")
    absent = [n for n in REQUIRED if n not in names]
    if absent:
        raise FormatError(f"{where}: the header lacks the required column {absent[0]!r} (need seq,send_ns,rx_ns)")
    if not any(n in names for n in RECEIVE):
        raise FormatError(f"{where}: the header names no receive time (rx_ns, rx_sw_ns or rx_hw_ns)")
    if "rx_ns" in names and "rx_sw_ns" in names:
        raise FormatError(f"{where}: give rx_ns or rx_sw_ns, not both (rx_ns is stored as rx_sw_ns)")


def _explain(message: str, names: list[str]) -> str:
    # Arrow says "In CSV column #1: ..."; users think in column names.
    line = message.splitlines()[0]
    prefix = "In CSV column #"
    if line.startswith(prefix):
        num, _, rest = line[len(prefix):].partition(":")
        if num.isdigit() and int(num) < len(names):
            return f"column {names[int(num)]}:{rest.replace('CSV conversion error to int64:', '')}"
    return line


def _period(sched: np.ndarray | None) -> int | None:
    """The period when sched_ns is a regular grid (the median step), else None."""
    if sched is None:
        return None
    s = sched[sched != MISSING]
    if len(s) < 2:
        return None
    step = int(np.median(np.diff(np.sort(s))))
    return step if step > 0 else None
