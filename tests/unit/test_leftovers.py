"""The sweep of leftovers: what it removes outside the results root, and how it reports."""

from __future__ import annotations

import os
from pathlib import Path

from latscope.env.doctor import INFO, OK, WARN, leftovers_check
from latscope.leftovers import SEND_SCRATCH_PREFIX, Reaped, _send_scratch
from tests.unit.store.test_staging_reap import dead_pid


def test_send_scratch_of_dead_processes_is_removed(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    stale = tmp / f"{SEND_SCRATCH_PREFIX}{dead_pid()}-x1y2"
    stale.mkdir(parents=True)
    (stale / "progress").write_bytes(b"\0" * 32)
    mine = tmp / f"{SEND_SCRATCH_PREFIX}{os.getpid()}-a"
    mine.mkdir()
    other = tmp / "latscope-sendfoo"
    other.mkdir()
    assert _send_scratch(tmp) == [str(stale)]
    assert not stale.exists() and mine.exists() and other.exists()


def test_notes_and_doctor_check_say_what_was_removed_and_kept() -> None:
    assert Reaped().notes() == () and not Reaped()
    r = Reaped(("namespace latscope-9-tx",), ("tracefs instance latscope-9-run (busy or not removable)",))
    assert r and r.notes() == ("removed what killed latscope runs left behind: namespace latscope-9-tx",
                               ("left behind by killed latscope runs, not removed: tracefs instance latscope-9-run "
                               "(busy or not removable)"))
    assert leftovers_check((), ()).status == OK
    assert leftovers_check(r.removed, ()).status == INFO
    check = leftovers_check(r.removed, r.kept)
    assert check.status == WARN and "latscope-9-run" in check.found and "latscope-9-tx" in check.found
