"""``trace-cmd report`` output: the default form, ``-t`` (nanoseconds) and ``-R`` (raw fields).

::

    lsx-tc:           python-11737 [000] 1795608577.904214: print:                tracing_mark_write: latscope tx seq=0
    lsx-tc:           python-11720 [001] 1795608577.088459: sys_enter_sendmsg:    fd: 0x00000004, msg: 0x7ffd...
    lsx-tc:      rcu_preempt-15    [001] 1795608576.786143: sched_switch:         rcu_preempt:15 [120] W ==> swapper/1:0 [120]

Differences from the kernel's text: a buffer-name prefix when the data came
from an instance, event names padded to 20 columns, syscalls under their
tracepoint names (``sys_enter_*``/``sys_exit_*``, arguments in hex), marker
writes as ``print: tracing_mark_write: ...``, and trace-cmd's plugins
rewrite sched_switch as ``prev:pid [prio] STATE ==> next:pid [prio]``.
With ``-R`` every event prints its raw fields instead (``prev_state=1``,
``ip=tracing_mark_write buf=...``, ``__syscall_nr=46 ret=0x1``).

The ``-l`` latency form (CPU and flags run together, comm cut to 8 letters)
is not read; its lines are counted as unparsed with a hint.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from latscope.trace import engine, scan, specs
from latscope.trace.table import EventTable

_MARK = b"tracing_mark_write: "
_RAW_MARK = b" buf="


def _skip_mark(buf: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """print events: the text after "tracing_mark_write: "."""
    here = scan.key_at(buf, lo, _MARK)
    return np.where(here, np.minimum(lo + len(_MARK), hi), lo)


def _skip_raw_mark(buf: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """print events of -R: the text after " buf="."""
    at = scan.find_key(buf, lo, _RAW_MARK, 64, hi)
    return np.where(at >= 0, np.minimum(at + len(_RAW_MARK), hi), lo)


def tracecmd_name(name: str, sep: int) -> str:
    return name


DEFAULT = engine.Dialect(name="trace-cmd", specs=specs.TRACECMD_SPECS, canonical=tracecmd_name,
                         args_fix={"print": _skip_mark})
RAW = engine.Dialect(name="trace-cmd-raw", specs=specs.RAW_SPECS, canonical=tracecmd_name,
                     args_fix={"print": _skip_raw_mark})

_RAW_HINTS = (re.compile(rb"sched_switch:\s+prev_comm=\S.* prev_state=-?\d+ next_comm="),
              re.compile(rb"sys_(?:enter|exit)_\w+:\s+__syscall_nr="),
              re.compile(rb"print:\s+ip=\S+ buf="))
_LATENCY = re.compile(rb"^(?:[\w.-]+: )?\s*\S{1,8}-\d+\s+\d+\S{4,6} \d+\.\d+: \w+:", re.MULTILINE)


def is_raw(sample: bytes) -> bool:
    """Whether a piece of report output is the -R form."""
    return any(p.search(sample) for p in _RAW_HINTS)


def parse_tracecmd_report(data: bytes | memoryview, *, meta: dict[str, Any] | None = None) -> EventTable:
    """Parse ``trace-cmd report`` text (default, -t or -R form, detected from the text)."""
    sample = bytes(data[:1 << 20])
    dialect = RAW if is_raw(sample) else DEFAULT
    table, stats, _ordinal = engine.parse_lines(data, dialect, meta=meta)
    if stats.unparsed and _LATENCY.search(sample):
        hint = ("this looks like `trace-cmd report -l` (latency format), which latscope does not read; "
                "run `trace-cmd report` without -l")
        table = table.with_meta(warnings=[*table.meta.get("warnings", []), hint])
    return engine.finish(table)
