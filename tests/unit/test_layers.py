"""Data flows one way (DESIGN.md): a package imports only packages below it, and the hot path stays small."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import latscope

SRC = Path(latscope.__file__).resolve().parent

#: Lowest first. A module may import its own package and anything in a lower layer, never a layer at or
#: above its own. Lazy imports inside functions count: they are dependencies all the same.
#: topo sits high since it holds the VM topology, which starts a guest and talks to its agent (remote).
LAYERS: list[set[str]] = [
    {"errors"},
    {"safetext", "files", "libc"},
    {"units", "contract", "timebase", "privileges", "process", "stopping", "testhooks"},
    {"store", "mounts"},
    {"netns"},
    {"env"},
    {"probe"},
    {"analysis", "remote"},
    {"topo"},
    {"trace", "importers"},
    {"report", "leftovers"},
    {"session", "experiment"},
    {"halves", "orchestrate", "monitor"},
    {"cli"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
#: Known upward imports, each with what would remove it; the test fails once one is gone, so the list shrinks.
EXCEPTIONS = {
    ("env/kvm.py", "topo"): "doctor asks the VM topology for its guest kernel and QEMU version: those lookups "
                            "belong below env (or the doctor check above topo)",
    ("remote/guesttrace.py", "trace"): "the guest agent drives tracefs with the host's primitives: "
                                       "trace/tracefs.py (files only, no parsing) belongs below remote",
}
#: What the probe workers (python -m latscope.probe.worker) must never load: each costs import time and
#: memory the worker then locks with mlockall, and some start threads of their own.
HEAVY = ("numpy", "pyarrow", "pandas", "duckdb", "scipy", "matplotlib", "jinja2", "latscope.store",
         "latscope.analysis", "latscope.trace", "latscope.report")


def unit_of(module: str) -> str:
    """The layer unit of ``latscope.a.b`` (a package or a top-level module): ``a``."""
    return module.split(".")[1]


def imports() -> list[tuple[str, int, str]]:
    """(file, line, imported latscope module) for every import in src/latscope, at any depth."""
    out = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] if node.module != "latscope" else [f"latscope.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            out += [(str(path.relative_to(SRC)), node.lineno, n) for n in names if n.startswith("latscope.")]
    return out


def test_every_package_has_a_layer() -> None:
    """A new package or top-level module must be placed in LAYERS before it can be checked."""
    units = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    unplaced = sorted(units - set(RANK))
    assert unplaced == [], f"add {unplaced} to LAYERS in tests/unit/test_layers.py"


def test_no_package_imports_one_at_or_above_its_layer() -> None:
    """Every import goes down the layers (or stays inside its own package), but for the listed exceptions."""
    bad, used = [], set()
    for file, line, target in imports():
        here = file.split("/")[0].removesuffix(".py")
        there = unit_of(target)
        if here == there or here == "__init__":
            continue
        if RANK.get(there, -1) >= RANK.get(here, -1):
            if (file, there) in EXCEPTIONS:
                used.add((file, there))
                continue
            bad.append(f"{file}:{line} imports {target} ({here} is layer {RANK.get(here)}, "
                       f"{there} layer {RANK.get(there)})")
    assert bad == [], "\n".join(bad)
    assert used == set(EXCEPTIONS), f"no longer needed, remove from EXCEPTIONS: {set(EXCEPTIONS) - used}"


def test_probe_worker_imports_only_the_hot_path() -> None:
    """A fresh `latscope.probe.worker` loads no Parquet, SQL, statistics, plotting or analysis code."""
    code = ("import sys, latscope.probe.worker\n"
            f"print('\\n'.join(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == []
