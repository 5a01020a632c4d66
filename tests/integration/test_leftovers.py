"""Leftovers of killed processes (a namespace, a tracefs instance, a staging directory) are removed by
`latscope doctor`, which says what it removed; a live process's are not touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from latscope import netns
from latscope.trace.tracefs import find_tracefs
from tests.conftest import BIN
from tests.unit.store.test_staging_reap import dead_pid

pytestmark = pytest.mark.root


@pytest.mark.serial  # another test's run would reap the dead pid's leftovers it plants
def test_doctor_removes_what_dead_processes_left(latscope, results: Path) -> None:
    dead = dead_pid()
    ns_dead, ns_live = f"latscope-{dead}-tx", f"latscope-{os.getpid()}-leftovertest"
    tracefs = find_tracefs()
    inst = tracefs / "instances" / f"latscope-{dead}-run"
    stage = results / f".staging-20260101-000000-abcdef-{dead}"
    try:
        netns.create(ns_dead)
        netns.create(ns_live)
        inst.mkdir()
        stage.mkdir()
        r = latscope("doctor", "--json", "--results", str(results))
        assert r.returncode == 0, r.stderr
        removed = json.loads(r.stdout)["leftovers"]["removed"]
        assert {f"namespace {ns_dead}", f"tracefs instance {inst.name}", f"staging {stage}"} <= set(removed)
        assert ns_dead not in netns.owned() and not inst.exists() and not stage.exists()
        assert ns_live in netns.owned()
        text = latscope("doctor", "--results", str(results)).stdout
        assert "leftovers" in text and ns_dead not in text
    finally:
        for name in (ns_dead, ns_live):
            netns.remove(name)
        if inst.exists():
            inst.rmdir()


def test_worker_refuses_to_start_when_its_controller_is_gone(tmp_path: Path) -> None:
    """The window before PR_SET_PDEATHSIG: a worker whose controller already died does not run."""
    spec = tmp_path / "spec.json"
    spec.write_text("{}")
    env = {**os.environ, "LATSCOPE_CONTROLLER_PID": str(dead_pid())}
    r = subprocess.run([sys.executable, "-m", "latscope.probe.worker", "sender", str(spec),
                        str(tmp_path / "sender.npz")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "is gone; not starting" in r.stderr
    assert not (tmp_path / "sender.npz.json").exists()


@pytest.mark.serial  # another test's run would reap the dead pid's namespace it plants
def test_a_run_without_cap_sys_admin_leaves_a_dead_runs_namespace_and_goes_on(tmp_path: Path) -> None:
    """Reaping needs CAP_SYS_ADMIN (unmounting the namespace); a run without it says what it kept and
    measures anyway, instead of dying on the first namespace it cannot remove."""
    dead = f"latscope-{dead_pid()}-rx"
    drop = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"]
    try:
        netns.create(dead)
        r = subprocess.run([*drop, str(BIN / "latscope"), "run", "--topology", "loopback", "--count", "20",
                            "--results", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert f"not removed: namespace {dead} (removing it needs CAP_SYS_ADMIN)" in r.stderr
        assert dead in netns.owned()
    finally:
        netns.remove(dead)
