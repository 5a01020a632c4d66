"""Out-of-range and hostile option values: one line, exit 2, nothing stored, nothing left waiting."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import BIN
from tests.hostile.conftest import as_nobody, one_line_error
from tests.support import synthetic_run

pytestmark = pytest.mark.hostile
LONG_NAME = "x" * 10_000


@pytest.mark.parametrize(("args", "needle"), [
    (["--period", "99999999999999999999999h"], "--period"),
    (["--period", "2h"], "--period"),
    (["--period", "1" * 5000], "--period"),
    (["--duration", "99999h"], "--duration"),
    (["--period", "1h", "--count", "10000"], "366 days"),
    (["--count", "1000000000"], "memory"),
    (["--base-time", "99999999999999999999999"], "--base-time"),
    (["--base-time", "inf"], "--base-time"),
    (["--base-time", "nan"], "--base-time"),
    (["--base-time", "-inf"], "--base-time"),
    (["--base-time", "1e400"], "--base-time"),
    (["--cpu-dma-latency", "3000000000"], "--cpu-dma-latency"),
    (["--so-priority", "4294967295"], "--so-priority"),
    (["--name", LONG_NAME], "--name"),
    (["--name", "two\nlines"], "non-printable"),
    (["--name", "\x1b[2J\x1b[31mred"], "non-printable"),
    (["--name", "rtl\u202eevil"], "non-printable"),
    (["--tag", "a\tb"], "non-printable"),
    (["--tag", "a,b"], "comma"),
    (["--tag", "t"] * 33, "tags"),
])
def test_run_rejects(latscope, results: Path, args: list[str], needle: str) -> None:
    """`run` refuses each value up front: exit 2, one short line, no run stored."""
    r = latscope("run", "--topology", "loopback", "--count", "10", *args, timeout=60)
    assert r.returncode == 2, r.stderr[-2000:]
    line = one_line_error(r)
    assert needle in line and len(line) < 400
    assert list(results.iterdir()) == []


@pytest.mark.parametrize(("verb", "args"), [
    ("send", ["--dest", "198.18.0.1:9", "--period", "99999999999999999999999h"]),
    ("send", ["--dest", "198.18.0.1:9", "--base-time", "inf"]),
    ("send", ["--dest", "198.18.0.1:9", "--name", LONG_NAME]),
    ("recv", ["--name", "a\x1b]0;title\x07"]),
    ("recv", ["--tag", "x\ny"]),
    ("import", ["csv", "/dev/null", "--name", "bad\rname"]),
    ("sql", [""]),
    ("sql", ["  ;  "]),
    ("show", ["x" * 5000]),
])
def test_other_verbs_reject(latscope, results: Path, verb: str, args: list[str]) -> None:
    """send, recv, import, sql and show refuse bad input with exit 2 and one short line (nothing is sent)."""
    r = latscope(verb, *args, timeout=60)
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(one_line_error(r)) < 400
    assert list(results.iterdir()) == []


@pytest.mark.root
def test_error_inside_a_worker_is_exit_2(tmp_path: Path) -> None:
    """A priority the worker cannot take (no CAP_SYS_NICE) is a usage error raised in the worker: exit 2."""
    drop = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"]
    env = {**os.environ, "LATSCOPE_RESULTS": str(tmp_path / "r")}
    for opt in ("--prio-recv", "--prio-send"):
        r = subprocess.run([*drop, str(BIN / "latscope"), "run", "--topology", "loopback", "--count", "50", opt,
                            "50"], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 2, r.stderr
        assert "SCHED_FIFO" in one_line_error(r)


@pytest.mark.root
def test_trace_without_root(nobody_can_run, tmp_path: Path) -> None:
    """`run --trace` as a plain user, or as root without capabilities: one line naming root, exit 2."""
    env = {**os.environ, "LATSCOPE_RESULTS": str(tmp_path / "r"), "HOME": str(tmp_path)}
    r = as_nobody(["run", "--trace", "--count", "10"], env)
    assert r.returncode == 2 and "--trace needs root" in one_line_error(r)
    drop = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"]
    r = subprocess.run([*drop, str(BIN / "latscope"), "run", "--trace", "--topology", "loopback", "--count", "10"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "--trace needs root" in one_line_error(r)


def test_a_plain_user_gets_a_run_or_one_line_and_a_doctor_report(nobody_can_run, tmp_path: Path) -> None:
    """As uid 65534 tracefs cannot even be looked into (mode 700 on Debian): `run` (loopback, the topology
    without root) stores its run or says in one line why it cannot, and `doctor` reports; no traceback."""
    env = {**os.environ, "LATSCOPE_RESULTS": str(tmp_path / "r"), "HOME": str(tmp_path)}
    (tmp_path / "r").mkdir()
    os.chown(tmp_path / "r", 65534, 65534)
    r = as_nobody(["run", "--topology", "loopback", "--count", "50"], env)
    if r.returncode != 0:
        one_line_error(r)
    else:
        assert "Traceback" not in r.stderr and "packets: sent 50, received 50" in r.stdout, r.stdout + r.stderr
    doctor = as_nobody(["doctor"], env)
    assert "Traceback" not in doctor.stderr, doctor.stderr[-2000:]
    assert "kernel traces" in doctor.stdout, doctor.stdout


def test_output_to_a_full_disk_is_one_line_and_exit_1(latscope, results: Path, tmpfs) -> None:
    """`ls --json > full` and `sql --csv > full`: the command says it could not write, exit 1, no traceback
    (and never exit 0 with the output cut short)."""
    for i in range(3):
        synthetic_run(results, np.full(200, 40_000), name=f"r{i}")
    full = tmpfs("64k")
    (full / "fill").write_bytes(b"\0" * 62 * 1024)
    for verb in (["ls", "--json"], ["sql", "SELECT run_id, name, path FROM runs", "--csv"]):
        with (full / "out").open("w") as out:
            r = subprocess.run([str(BIN / "latscope"), *verb], stdout=out, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "LATSCOPE_RESULTS": str(results)}, timeout=60)
        assert r.returncode == 1, (verb, r.stderr)
        assert "cannot write the output" in one_line_error(r)


def _hostile_record(run, **fields) -> None:
    doc = json.loads((run.path / "run.json").read_text())
    doc.update(fields)
    (run.path / "run.json").write_text(json.dumps(doc))


def test_stored_names_are_escaped_on_the_terminal(latscope, results: Path) -> None:
    """Names, tags and status from run.json reach ls, show, check, compare and sql escaped, never as markup."""
    a = synthetic_run(results, np.full(300, 40_000), name="a")
    b = synthetic_run(results, np.full(300, 41_000), name="b")
    evil = "x\x1b[2J\x1b]0;owned\x07\n[/]y"
    _hostile_record(a, name=evil, tags=["t\x1b[31m", "[bold]"], status="\x1b[5mblink")
    outputs = [latscope("ls"), latscope("show", a.run_id), latscope("check", a.run_id, "--max", "p99=1s"),
               latscope("compare", a.run_id, b.run_id, "--bootstrap", "100"),
               latscope("sql", "SELECT name, tags, status FROM runs")]
    for r in outputs:
        assert r.returncode == 0, r.stderr[-2000:]
        assert "\x1b" not in r.stdout + r.stderr and "\x07" not in r.stdout + r.stderr
        assert "x\\x1b[2J" in r.stdout, r.stdout
    ls_lines = [ln for ln in outputs[0].stdout.splitlines() if a.run_id in ln]
    assert len(ls_lines) == 1 and "\\n[/]y" in ls_lines[0] and "[bold]" in ls_lines[0]
