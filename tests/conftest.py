"""Shared fixtures: the real CLI as a subprocess, a private results root, synthetic runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked root when not running as root (CI runs as root, so they run there)."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A private, empty results root."""
    root = tmp_path / "results"
    root.mkdir()
    return root


@pytest.fixture
def latscope(results: Path):
    """Run the installed `latscope` command; returns CompletedProcess (text)."""

    def run(*args: str, timeout: float = 120, env: dict[str, str] | None = None, use_results: bool = True,
            **kw) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "LATSCOPE_RESULTS": str(results)} if use_results else dict(os.environ)
        full_env.update(env or {})
        return subprocess.run([str(BIN / "latscope"), *args], capture_output=True, text=True, timeout=timeout,
                              env=full_env, **kw)

    return run
