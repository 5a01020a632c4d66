"""`latscope sql "SELECT ..."`: SQL over the stored runs and their samples (docs/sql.md)."""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import decimal
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import click

from latscope.cli.common import json_header, json_option, results_option, selected_runs, warn
from latscope.errors import LatscopeError
from latscope.safetext import printable

DEFAULT_MAX_ROWS = 200


@click.command()
@click.argument("statement", metavar="SQL")
@click.option("--where", "where", multiple=True, metavar="KEY=VALUE",
              help="Only these runs in both views (the filters of `latscope ls --where`; repeatable).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (header line, then every row).")
@click.option("--max-rows", type=click.IntRange(0), default=DEFAULT_MAX_ROWS, show_default=True,
              help="Rows shown in the table (0: all); --json and --csv always give every row.")
@click.option("--skip-bad", is_flag=True, help="Leave runs with unreadable samples out instead of failing.")
@click.option("--dataset", "dataset_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Query a dataset written by `latscope export --dataset` instead of the results store; "
                   "samples gains the partition columns host, date and hour.")
@results_option
@json_option
def sql(statement: str, where: tuple[str, ...], as_csv: bool, max_rows: int, skip_bad: bool,
        dataset_dir: str | None, results: str | None, as_json: bool) -> None:
    """Run SQL (DuckDB) over the views `runs` (one row per run) and `samples` (one row per packet, all runs).

    samples has the raw columns plus run_id and the derived metrics of
    docs/metrics.md (latency_ns, delta_ns, e2e_ns, ...), computed in SQL with
    the same formulas. Example:

      latscope sql "SELECT run_id, quantile_cont(latency_ns, 0.999)/1e3 AS p999_us
                    FROM samples GROUP BY run_id"
    """
    from latscope.store import catalog

    if as_json and as_csv:
        raise click.UsageError("give --json or --csv, not both")
    if dataset_dir is not None and results is not None:
        raise click.UsageError("give --dataset or --results, not both")
    if dataset_dir is None:
        _store, runs, _filters = selected_runs(results, where)
    else:
        from latscope.store import dataset

        filters = [catalog.parse_filter(w) for w in where]
        target = dataset.open_dataset(Path(dataset_dir))
    # A private spill directory for sorts bigger than memory, removed afterwards -- also when a signal ends the
    # query: INT, TERM and HUP interrupt DuckDB and unwind through the cleanup instead of killing the process.
    with tempfile.TemporaryDirectory(prefix="latscope-sql-") as tmp, Interrupter(tmp) as stop:
        if dataset_dir is None:
            con, skipped = catalog.connect(runs, skip_bad=skip_bad, temp_dir=tmp)
        else:
            con, skipped = dataset.connect(target, filters, skip_bad=skip_bad, temp_dir=tmp)
        stop.watch(con)
        try:
            for s in skipped:
                warn(f"left out of samples: {s.reason}")
            result = catalog.query(con, statement)
            rows = stop.guard(result.rows)
            result = catalog.QueryResult(result.columns, result.types, rows)
            if as_json:
                _emit_json(result)
            elif as_csv:
                _emit_csv(result)
            else:
                _emit_table(result, max_rows)
        except LatscopeError:
            stop.check()  # an interrupted query is an interruption, not a SQL error
            raise
        finally:
            con.close()
        stop.check()


class Interrupter:
    """Turns INT, TERM and HUP into an interrupted query and a normal unwind (so temporary files go).

    Python's handlers only note the signal (the default actions would kill
    the process on the spot); the C-level handler also writes its number to a
    wakeup pipe at once, whichever thread the kernel picked, and a watcher
    thread reading that pipe interrupts DuckDB, whose execute() does not
    return to Python until it is done. If the main thread has not unwound
    ``GRACE_S`` later, the watcher removes the temporary directory itself
    and ends the process.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    GRACE_S = 10.0

    def __init__(self, temp_dir: str) -> None:
        self.temp_dir = temp_dir
        self.signum: int | None = None
        self.con: Any = None
        self._done = threading.Event()

    def __enter__(self) -> Self:
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        self._old_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        self._old = {sig: signal.signal(sig, self._note) for sig in self.SIGNALS}
        self._thread = threading.Thread(target=self._watch, name="latscope-sql-signals", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        for sig, old in self._old.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(self._old_fd)
        with contextlib.suppress(OSError):
            os.write(self._w, b"\0")  # 0 is no signal: it ends the watcher
        self._thread.join(1.0)
        os.close(self._r)
        os.close(self._w)

    def watch(self, con: Any) -> None:
        self.con = con
        if self.signum is not None:
            con.interrupt()

    def guard(self, rows: Iterator[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        """``rows``, ending early (KeyboardInterrupt) once a signal came."""
        for row in rows:
            self.check()
            yield row

    def check(self) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt

    def _note(self, signum: int, _frame: Any) -> None:
        self.signum = signum

    def _watch(self) -> None:
        while True:
            try:
                data = os.read(self._r, 1)
            except OSError:
                return
            if not data or data[0] == 0 or self._done.is_set():
                return
            if data[0] in self.SIGNALS:
                break
        self.signum = self.signum or data[0]
        # interrupt() only stops a query that is running: repeat it until the main thread has unwound,
        # so a query that was about to start when the signal came is stopped too.
        deadline = time.monotonic() + self.GRACE_S
        while time.monotonic() < deadline:
            if self.con is not None:
                with contextlib.suppress(Exception):  # closed meanwhile: the main thread is unwinding
                    self.con.interrupt()
            if self._done.wait(0.1):
                return
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        os._exit(128 + data[0])


def _emit_json(result: Any) -> None:
    # Rows are streamed so a large result never sits in memory as one document.
    out = sys.stdout
    out.write("{\n" + "".join(f"  {json.dumps(k)}: {json.dumps(v)},\n" for k, v in json_header("sql").items()))
    out.write('  "columns": ')
    out.write(json.dumps([{"name": n, "type": t} for n, t in zip(result.columns, result.types, strict=True)]))
    out.write(',\n  "rows": [')
    count = 0
    for row in result.rows:
        out.write(("," if count else "") + "\n    ")
        out.write(json.dumps({n: plain(v) for n, v in zip(result.columns, row, strict=True)}, allow_nan=False))
        count += 1
    out.write(("\n  " if count else "") + f'],\n  "row_count": {count}\n}}\n')
    out.flush()  # inside the verb: a write error (a full disk) is the verb's, with its exit code


def _emit_csv(result: Any) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    if result.columns:
        writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow(["" if v is None else _csv_cell(v) for v in row])
    sys.stdout.flush()  # inside the verb: a write error (a full disk) is the verb's, with its exit code


def _emit_table(result: Any, max_rows: int) -> None:
    if not result.columns:
        click.echo("ok")
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    for name, typ in zip(result.columns, result.types, strict=True):
        numeric = any(t in typ for t in ("INT", "DOUBLE", "FLOAT", "DECIMAL", "REAL"))
        table.add_column(Text(printable(name)), justify="right" if numeric else "left")
    shown = more = 0
    for row in result.rows:
        if max_rows and shown >= max_rows:
            more += 1
            continue
        # Text, not str: values (names, run.json) are data, never rich markup; control characters escaped.
        table.add_row(*(Text("NULL" if v is None else printable(_cell(v))) for v in row))
        shown += 1
    # Wide enough never to cut a value: a table is only as wide as its content.
    Console(width=100_000).print(table)
    note = f"({shown} row{'s' if shown != 1 else ''}"
    if more:
        note += f"; {more} more not shown: use --max-rows 0, --csv or --json"
    click.echo(note + ")", err=True)


def plain(v: Any) -> Any:
    """A DuckDB value as plain JSON: numbers, strings, lists, objects, null (NaN/inf become null)."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, decimal.Decimal):
        return float(v) if v.is_finite() else None
    if isinstance(v, (_dt.datetime, _dt.date, _dt.time)):
        return v.isoformat()
    if isinstance(v, _dt.timedelta):
        return v.total_seconds()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return str(v)


def _csv_cell(v: Any) -> str:
    # Full precision: CSV is for further processing, not for reading.
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    if isinstance(v, (list, dict)):
        return json.dumps(plain(v))
    p = plain(v)
    return p if isinstance(p, str) else json.dumps(p)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if math.isfinite(v) and abs(v) < 1e15 else repr(v)
    if isinstance(v, (list, dict)):
        return json.dumps(plain(v))
    p = plain(v)
    return p if isinstance(p, str) else json.dumps(p)
