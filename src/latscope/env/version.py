"""latscope's own version and git commit, and the Python that runs it."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import latscope


def git_commit() -> str | None:
    """The commit of the source tree latscope runs from, when it runs from a git checkout."""
    here = Path(latscope.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return None
    try:
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        # A slow file system (a guest reading the tree over 9p) must not cost the run its environment.
        return commit + "-unknown-state"
    return commit + ("-dirty" if dirty else "")


def collect() -> dict[str, Any]:
    return {
        "version": latscope.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
    }
