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


@pytest.fixture
def tmpfs(tmp_path: Path):
    """Mount a tmpfs of ``size`` under tmp_path (root only); always unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        target = tmp_path / f"tmpfs{len(mounts)}"
        target.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(target)], check=True)
        mounts.append(target)
        return target

    yield mount
    for m in mounts:
        subprocess.run(["umount", str(m)], check=False)
        if os.path.ismount(m):
            subprocess.run(["umount", "-l", str(m)], check=False)


def fill(directory: Path, limit: int = 1 << 30) -> Path:
    """Write a file into ``directory`` until its file system is full (at most ``limit`` bytes); return it."""
    path = directory / "filler"
    block = b"\0" * (64 << 10)
    with open(path, "wb", buffering=0) as fh:
        written = 0
        while written < limit:
            try:
                written += fh.write(block)
            except OSError:
                break
    return path
