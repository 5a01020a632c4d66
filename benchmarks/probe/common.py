"""Shared by the probe benchmarks: run latscope and read what it stored."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

LATSCOPE = str(Path(sys.executable).parent / "latscope")


def run_latscope(args: list[str], results: Path) -> dict:
    """`latscope run ... --json -q` into ``results``; the JSON document."""
    r = subprocess.run([LATSCOPE, "run", *args, "--json", "-q", "--results", str(results)],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"latscope failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


def samples(results: Path, run_id: str, columns: list[str]):
    """Columns of a stored run."""
    from latscope.store.layout import ResultsStore

    return ResultsStore(results).resolve(run_id).samples(columns)


def pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q))


def scratch() -> Path:
    """A temporary results root, removed by the caller."""
    return Path(tempfile.mkdtemp(prefix="latscope-bench-"))


def cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def host() -> str:
    return f"{os.uname().release}, {os.cpu_count()} CPUs"
