"""Staging directories of killed runs are removed; a live run's never is (its pid lives, its lock is held)."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

from latscope.store.layout import ResultsStore


def dead_pid() -> int:
    """The pid of a process that has ended."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_reaps_only_what_dead_processes_left(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    dead = dead_pid()
    stale = tmp_path / f".staging-20260101-000000-abcdef-{dead}"
    (stale / "trace").mkdir(parents=True)
    (stale / "sender.npz").write_bytes(b"x" * 1000)
    probe = tmp_path / f".write-test-{dead}"
    probe.write_bytes(b"\0")
    live_owner = tmp_path / f".staging-20260101-000000-abcdef-{os.getppid()}"
    live_owner.mkdir()
    no_pid = tmp_path / ".staging-something"
    no_pid.mkdir()
    run_dir = tmp_path / f"20260101-000000-{dead}"
    run_dir.mkdir()
    assert store.reap_staging() == sorted([stale.name, probe.name])
    assert not stale.exists() and not probe.exists()
    assert live_owner.exists() and no_pid.exists() and run_dir.exists()


def test_a_locked_staging_directory_is_kept_even_when_its_pid_looks_dead(tmp_path: Path) -> None:
    """Another pid namespace sharing the results root: its pid means nothing here, its lock does."""
    store = ResultsStore(tmp_path)
    locked = tmp_path / f".staging-20260101-000000-abcdef-{dead_pid()}"
    locked.mkdir()
    fd = os.open(locked, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert store.reap_staging() == [] and locked.exists()
    finally:
        os.close(fd)
    assert store.reap_staging() == [locked.name]


def test_a_live_runs_staging_survives_a_reap_and_goes_with_the_run(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    with store.staging("20260101-000000-abcdef") as stage:
        (stage / "samples.parquet").write_bytes(b"x")
        assert ResultsStore(tmp_path).reap_staging() == [] and stage.exists()
    assert not stage.exists()


def test_a_missing_root_has_nothing_to_reap(tmp_path: Path) -> None:
    assert ResultsStore(tmp_path / "absent").reap_staging() == []
