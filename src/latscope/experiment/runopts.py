"""`run --stress/--log-dir/--log-fs` turned into captures, every check done before anything is set up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from latscope.experiment.logfs import LogFs, check_log_options, fs_size
from latscope.experiment.spec import check_plan, check_tools, parse_all
from latscope.experiment.stress import StressCapture
from latscope.probe.config import MeasureConfig
from latscope.probe.spec import DEFAULT_PORT


@dataclass(frozen=True)
class Experiment:
    """The captures of a run's loads and log directory, in the order they start (close is the reverse)."""

    captures: tuple[Any, ...] = ()
    logfs: LogFs | None = None


def check(stress: Sequence[str], log_dir: str | None, log_fs: str | None, cfg: MeasureConfig) -> list[Any]:
    """Validate --stress/--log-dir/--log-fs against ``cfg`` (ConfigError, exit 2); the parsed stress specs.

    Nothing is set up: `campaign plan` calls it for every cell before the first run.
    """
    check_log_options(log_dir, log_fs, stream_log=cfg.stream_log, topology=cfg.topology)
    specs = parse_all(stress)
    check_plan(specs, topology=cfg.topology, log_target=log_dir is not None or log_fs is not None)
    check_tools(specs)
    return list(specs)


def experiment(stress: Sequence[str], log_dir: str | None, log_fs: str | None, cfg: MeasureConfig) -> Experiment:
    """Validate --stress/--log-dir/--log-fs against ``cfg`` (ConfigError, exit 2) and build their captures."""
    specs = check(stress, log_dir, log_fs, cfg)
    log_target = log_dir is not None or log_fs is not None
    captures: list[Any] = []
    logfs = None
    if log_target:
        io_there = sum(s.size or 0 for s in specs if s.kind == "io" and s.dir is None)
        logfs = LogFs(log_fs, log_dir, size_bytes=fs_size(cfg.count, io_there))
        captures.append(logfs)
    if specs:
        captures.append(StressCapture(specs, cfg.duration_ns / 1e9, family=cfg.family,
                                      probe_port=cfg.port or DEFAULT_PORT,
                                      default_dir=logfs.current_dir if logfs is not None else lambda: None))
    return Experiment(tuple(captures), logfs)
