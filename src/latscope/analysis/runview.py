"""A stored run restricted to a time range, with its columns read lazily.

show, compare, check and report all start the same way: find the rows of the
range the user chose, then read only the columns a metric needs, for only
those rows. RunView is that common start. It keeps one array for good: each
selected row's offset into the run, which the range selection had to read
anyway and which windows, anomalies and figures all need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from latscope.analysis import chunked
from latscope.analysis.anomalies import RunSeries
from latscope.analysis.columns import ColumnReader, LazyColumns
from latscope.analysis.summary import packet_counts, summarise_columns
from latscope.analysis.window import TIME_COLUMNS, Range, Selection, offsets, select
from latscope.errors import ConfigError
from latscope.safetext import printable
from latscope.store.layout import StoredRun
from latscope.store.samples import MISSING

if TYPE_CHECKING:
    from latscope.analysis.compare import RunData

#: Topologies whose two ends read the same clock (one host, one kernel).
SAME_CLOCK_TOPOLOGIES = {"loopback", "veth", "bridge", "macvlan", "vxlan", "xdp", "tap"}


@dataclass(frozen=True)
class RunView:
    """``run`` limited to ``selection``; ``columns`` reads (and forgets) sample columns on demand."""

    run: StoredRun
    reader: ColumnReader
    selection: Selection
    columns: LazyColumns
    offsets_ns: np.ndarray  # per selected row: ns since the run's first packet, MISSING where unknown

    @classmethod
    def open(cls, run: StoredRun, rng: Range = Range()) -> RunView:
        """Validate the samples file and select the rows of ``rng``."""
        reader = ColumnReader(run.samples_path)
        for name in TIME_COLUMNS:
            times = reader.read(name)
            if np.any(times != MISSING):
                selection = select(times, rng, name)
                break
        else:
            raise ConfigError(f"run {run.run_id} has no timestamps to place its packets in time")
        rows = selection.rows
        mine = times[rows] if isinstance(rows, slice) and times.flags.writeable else np.array(times[rows])
        return cls(run, reader, selection, LazyColumns(reader, rows), offsets(mine, selection.t0_ns))

    @property
    def label(self) -> str:
        rec = self.run.record
        # Shown in text and figures: a stored name may hold anything, so control characters are escaped.
        return printable(rec.name) or rec.run_id

    @property
    def period_ns(self) -> int | None:
        period = self.run.record.config.get("period_ns")
        return int(period) if isinstance(period, (int, float)) and period > 0 else None

    @property
    def same_clock(self) -> bool | None:
        """Whether both ends were timestamped by one clock; None when the run does not say."""
        rec = self.run.record
        topology = rec.config.get("topology")
        if rec.source.get("kind") != "measured" or topology is None:
            return None
        return topology in SAME_CLOCK_TOPOLOGIES

    def summarise(self, names: tuple[str, ...] | None = None, keep: tuple[str, ...] = (),
                  percentiles: dict[str, dict[str, float]] | None = None
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """summarise_columns over the selection; afterwards no sample column stays cached."""
        doc, kept = summarise_columns(self.columns, self.run.record.completeness, 0, names, keep, percentiles)
        self.columns.keep_only(())
        if not doc.get("duration_ns") and self.selection.time_column != "sched_ns":
            # Imports without a schedule: the duration is the span of the time column used instead.
            known = self.offsets_ns[self.offsets_ns != MISSING]
            doc["duration_ns"] = int(known.max() - known.min()) if len(known) > 1 else 0
        return doc, kept

    def metric(self, name: str) -> np.ndarray:
        """One metric over the selection (float64 ns, NaN where undefined)."""
        values = chunked.scan(self.columns, [name], None, packet_counts).values[name]
        self.columns.keep_only(())
        return values

    def seq(self) -> np.ndarray:
        """The seq of each selected row."""
        return np.asarray(self.columns.read("seq"))

    def worst(self, values: np.ndarray, n: int, seq: np.ndarray | None = None) -> list[dict[str, Any]]:
        """The ``n`` selected packets with the highest ``values``: seq, value (µs) and time into the run (s)."""
        ok = np.flatnonzero(~np.isnan(values))
        k = min(n, len(ok))
        if k <= 0:
            return []
        top = ok[np.argpartition(values[ok], -k)[-k:]]
        top = top[np.argsort(-values[top], kind="stable")]
        seqs = (seq if seq is not None else self.seq())[top]
        out: list[dict[str, Any]] = []
        for j, i in enumerate(top):
            t = self.offsets_ns[i]
            out.append({"seq": int(seqs[j]), "value_us": round(float(values[i]) / 1000, 3),
                        "at_s": None if t == MISSING else round(int(t) / 1e9, 6)})
        return out

    def compare_data(self, latency_ns: np.ndarray, lost: np.ndarray) -> RunData:
        """The run as compare sees it. Rows without a latency that were not lost (a missing send
        timestamp in an import) say nothing about loss or latency and are left out."""
        from latscope.analysis.compare import RunData  # scipy.stats costs `show` 0.7 s to import

        keep = ~np.isnan(latency_ns) | lost
        return RunData(self.label, latency_ns if keep.all() else latency_ns[keep])

    def series(self, latency_ns: np.ndarray, lost: np.ndarray, seq: np.ndarray | None = None) -> RunSeries:
        """What the anomaly detectors read."""
        return RunSeries(self.offsets_ns, seq if seq is not None else self.seq(), latency_ns, lost,
                         self.period_ns, self.same_clock)

