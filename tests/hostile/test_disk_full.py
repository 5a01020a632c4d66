"""A results disk that fills up during a run or while storing: the measurement is kept, the store is not touched.

Each test mounts a small tmpfs as the results root (and always unmounts it).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from latscope.errors import StoreError
from latscope.store.layout import NotStored, ResultsStore
from tests.conftest import BIN
from tests.hostile.conftest import fill, one_line_error
from tests.support import synthetic_run

pytestmark = [pytest.mark.hostile, pytest.mark.root]


def test_save_on_a_full_disk_leaves_the_store_as_it_was(tmpfs, tmp_path: Path) -> None:
    """ResultsStore.save with too little room: one StoreError naming ENOSPC and the file, nothing left behind."""
    root = tmpfs("1m")
    synthetic_run(root, np.full(100, 1000))
    before = sorted(os.listdir(root))
    # Random latencies do not compress: 200,000 packets need several MiB.
    noisy = np.random.default_rng(1).integers(1, 10**9, 200_000)
    with pytest.raises(StoreError, match="ENOSPC") as info:
        synthetic_run(root, noisy)
    assert str(root) in str(info.value) and "\n" not in str(info.value)
    assert sorted(os.listdir(root)) == before


def test_store_run_keeps_the_measurement_elsewhere(tmpfs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """store_run on a full disk: NotStored names both places; the kept copy is a complete, loadable run."""
    import tempfile

    root = tmpfs("256k")
    # tempfile reads $TMPDIR once per process and caches it: set both.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    from latscope.store import layout

    run = synthetic_run(tmp_path / "elsewhere", np.random.default_rng(2).integers(1, 10**9, 100_000))
    store = ResultsStore(root)
    cols = run.samples().columns
    with store.staging(run.run_id) as stage, pytest.raises(NotStored) as info:
        store.store_run(stage, run.record, cols)
    assert "ENOSPC" in str(info.value) and str(root) in str(info.value)
    kept = info.value.kept
    assert kept is not None and str(kept) in str(info.value) and kept.parent.parent == tmp_path
    assert os.listdir(root) == []
    again = layout.load_run_dir(kept, strict_name=True)
    assert again.record == run.record and len(again.samples()) == 100_000


def test_run_survives_a_disk_that_fills_during_the_run(tmpfs, tmp_path: Path) -> None:
    """`run` whose results disk fills mid-run: exit 1, one line saying where it could not write and where
    the run was kept; the store holds only the filler; the kept run has every packet; the next run works."""
    root = tmpfs("8m")
    kept_in = tmp_path / "tmp"
    kept_in.mkdir()
    env = {**os.environ, "LATSCOPE_RESULTS": str(root), "TMPDIR": str(kept_in)}
    cmd = [str(BIN / "latscope"), "run", "--topology", "loopback", "--count", "6000", "--period", "500us", "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not [p for p in root.iterdir() if p.name.startswith(".staging-")] and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        filler = fill(root)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 1, err
    line = one_line_error(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    assert "ENOSPC" in line and str(root) in line and "kept in" in line
    assert [p.name for p in root.iterdir()] == ["filler"]
    kept = next(kept_in.glob("latscope-unsaved-*/*"))
    show = subprocess.run([str(BIN / "latscope"), "show", str(kept), "--json"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert show.returncode == 0, show.stderr
    assert json.loads(show.stdout)["packets"]["sent"] == 6000
    filler.unlink()
    ok = subprocess.run(cmd[:-1] + ["--count", "200", "-q"], capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert len([p for p in root.iterdir() if not p.name.startswith(".")]) == 1


@pytest.mark.parametrize("room", [True, False])
def test_worker_dir_is_in_memory_when_it_has_room(tmpfs, tmp_path: Path, room: bool) -> None:
    """The workers' directory is a private one on the memory file system when it has room for twice the
    results (removed afterwards), else the staging directory."""
    from latscope.session import worker_dir

    shm = tmpfs("4m")
    stage = tmp_path / "stage"
    stage.mkdir()
    count = 1000 if room else 100_000  # 120 bytes a packet, twice: 240 kB, or 24 MB
    with worker_dir(stage, count, shm=shm) as work:
        assert (work.parent == shm and work.name.startswith(f"latscope-work-{os.getpid()}-")) if room \
            else work == stage
        (work / "sender.npz").write_bytes(b"x")
    assert os.listdir(shm) == []


def test_worker_results_of_a_killed_run_are_reaped(tmp_path: Path) -> None:
    """A killed run's latscope-work-<pid>-* directory is removed by the next run's sweep; live ones stay."""
    from latscope.leftovers import _WORK, _send_scratch
    from tests.unit.store.test_staging_reap import dead_pid

    stale = tmp_path / f"latscope-work-{dead_pid()}-ab12"
    stale.mkdir()
    (stale / "receiver.npz").write_bytes(b"x")
    live = tmp_path / f"latscope-work-{os.getpid()}-cd34"
    live.mkdir()
    assert _send_scratch(tmp_path, _WORK) == [str(stale)]
    assert not stale.exists() and live.exists()
