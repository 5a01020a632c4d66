"""Hostile `--stress io:dir=...`: fio writes only its own file, and a fio that cannot write fails the run."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.hostile.conftest import one_line_error
from tests.integration.test_stress import run_doc

pytestmark = [pytest.mark.hostile, pytest.mark.root, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _fio() -> None:
    if shutil.which("fio") is None:
        pytest.fail("fio is not installed: ./dev setup installs it")


def test_a_colon_in_dir_does_not_make_fio_write_elsewhere(latscope, results: Path, tmp_path: Path) -> None:
    """fio splits --filename at ':' into several files: dir=/x/v:w wrote into (and truncated) /x/v.

    The colon is escaped (fio's '\\:'), so fio writes DIR/latscope-PID-io0.dat and nothing else.
    """
    victim = tmp_path / "v"
    victim.write_bytes(b"precious data\n" * 100)
    digest = hashlib.sha256(victim.read_bytes()).hexdigest()
    target = tmp_path / "v:w"
    target.mkdir()
    (tmp_path / "w").mkdir()
    r = latscope("run", "--topology", "loopback", "--count", "300", "--quiet", "--json",
                 "--stress", f"io:dir={target},size=1M", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == digest
    assert list((tmp_path / "w").iterdir()) == [] and list(target.iterdir()) == []
    entry = run_doc(results)["stress"][0]
    assert entry["achieved"]["bytes"] > 0 and entry["achieved"].get("error") in (0, None), entry["achieved"]


def test_a_backslash_in_dir_is_refused(latscope, results: Path, tmp_path: Path) -> None:
    """fio reads '\\:' as an escaped colon: a dir with a backslash cannot be given to it exactly."""
    target = tmp_path / "a\\"
    target.mkdir()
    r = latscope("run", "--topology", "loopback", "--count", "300", "--stress", f"io:dir={target}", timeout=60)
    assert r.returncode == 2 and "backslash" in one_line_error(r)
    assert list(results.iterdir()) == []


@pytest.mark.parametrize("directory", ["/proc", "/sys"])
def test_a_fio_that_cannot_write_fails_the_run(latscope, results: Path, directory: str) -> None:
    """fio ended at once (cannot create its file) but its own stderr counted as 'writing': the run was stored
    as complete, under a load that never ran. Now: exit 1, one line naming fio, nothing of fio's left."""
    r = latscope("run", "--topology", "loopback", "--count", "300", "--quiet", "--stress",
                 f"io:dir={directory},size=1M", timeout=120)
    assert r.returncode == 1, r.stderr[-2000:]
    line = one_line_error(r)
    assert "fio" in line and "ended before writing" in line
    runs = [p for p in results.iterdir() if not p.name.startswith(".")]
    for p in runs:  # whatever is kept is not a complete run
        assert json.loads((p / "run.json").read_text())["status"] != "complete"
