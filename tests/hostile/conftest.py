"""Helpers of the hostile-input suite: a run to attack, a one-line-error check, an unprivileged user."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import BIN
from tests.support import synthetic_run

NOBODY = 65534


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command; fails the test on a traceback or several lines."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith("latscope: error: "), lines[0]
    return lines[0]


@pytest.fixture
def stored(results: Path):
    """One small synthetic run in the private results root."""
    return synthetic_run(results, np.full(200, 40_000), name="victim")


def as_nobody(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run latscope as uid/gid 65534 with no capabilities and no groups."""
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           str(BIN / "latscope"), *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture
def nobody_can_run(tmp_path: Path) -> None:
    """Skip unless root can switch to uid 65534 and that user can start latscope from this virtualenv."""
    if os.geteuid() != 0:
        pytest.skip("switching to an unprivileged user needs root")
    try:
        r = as_nobody(["--version"], {**os.environ, "HOME": str(tmp_path)}, timeout=30)
    except FileNotFoundError:
        pytest.skip("setpriv is not installed")
    if r.returncode != 0:
        pytest.skip(f"uid {NOBODY} cannot start latscope here: {r.stderr.strip()[:200]}")
