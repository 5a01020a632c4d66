"""What a self-contained guest Python needs (``--vm-root initramfs``), asked of the interpreter itself.

The seed investigation also ran its benchmark "from the initrd": no root file
system at all, so that no block device or network file system is touched.
For that the initramfs must hold a Python that can run latscope's agent, the
probe workers and the environment collectors. What goes in is decided by a
probe process of the very interpreter the guest runs, which imports the
guest's entry points (and, to catch imports made only when a function runs,
every module named by an import statement anywhere in the latscope modules it
loaded), then reports the files of every module it loaded:

- the standard library's Python modules, except the parts no guest runs
  (``STDLIB_LEFT_OUT``: tests, GUI, packaging tools, documentation);
- the standard library's extension modules the probe loaded;
- from site-packages, the packages the probe loaded: their Python modules
  (without tests) and the extension modules it loaded. A package in ``HEAVY``
  (the analysis and report stack) comes in only when an entry point imports
  it at start-up, not when a lazy import merely names it;
- latscope's own package, placed in site-packages whatever its install mode;
- bytecode for every module the probe loaded (compiled on the host: the
  guest's emulated CPU would otherwise compile them at every boot).

The interpreter, its shared libraries and the dynamic loader are added by
``initramfs`` from ``ldd``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from latscope.errors import TopologyError

#: What the guest runs: the agent (PID 1), the sender/receiver workers (forks of the agent), the environment
#: collectors, the disk writer the agent starts as ``python -m`` (no import statement names it).
ENTRY_MODULES = ("latscope.remote.agent", "latscope.probe.worker", "latscope.env", "latscope.remote.guestload")
#: Imported only inside functions the guest calls, outside latscope: none today (zipfile was, inside numpy.savez,
#: until the workers wrote their .npz with probe.columns, which imports it).
EXTRA_MODULES: tuple[str, ...] = ()
#: Top-level parts of the standard library no guest runs.
STDLIB_LEFT_OUT = frozenset({
    "test", "idlelib", "tkinter", "turtledemo", "turtle.py", "ensurepip", "lib2to3", "pydoc_data",
    "distutils", "venv", "site-packages", "dist-packages", "__phello__",
})
#: At any depth of the standard library (ctypes/test, unittest/test, sqlite3/test...).
STDLIB_LEFT_OUT_BELOW = frozenset({"test", "tests", "idle_test", "__pycache__"})
#: Inside a package: directories of tests, build helpers and C headers.
PACKAGE_LEFT_OUT = frozenset({"tests", "test", "f2py", "_pyinstaller", "include", "benchmarks", "__pycache__"})
#: Never in the guest unless an entry point cannot start without them.
HEAVY = frozenset({"pyarrow", "scipy", "matplotlib", "duckdb", "pandas", "PIL", "pytest", "_pytest",
                   "hypothesis", "rich", "click", "jinja2", "pygments"})

# Runs in the guest's interpreter: import the entry points, then follow latscope's own lazy imports.
_PROBE = r"""
import ast, importlib, importlib.util, json, sys, sysconfig
entries = json.loads(sys.argv[1])
startup = set(sys.modules)
for name in entries:
    importlib.import_module(name)
eager = set(sys.modules)
scanned, todo, failed = set(), [], {}

def scan():
    for name, mod in list(sys.modules.items()):
        if name in scanned or not (name == "latscope" or name.startswith("latscope.")):
            continue
        scanned.add(name)
        path = getattr(mod, "__file__", None) or ""
        if not path.endswith(".py"):
            continue
        pkg = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        with open(path, "rb") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                todo.extend((a.name, None) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), pkg) \
                    if node.level else node.module
                todo.extend((base, a.name) for a in node.names)

scan()
while todo:
    name, attr = todo.pop()
    try:
        mod = importlib.import_module(name)
        if attr and hasattr(mod, "__path__") and attr != "*":
            importlib.import_module(f"{name}.{attr}")
    except ImportError as exc:
        failed[name if attr is None else f"{name}.{attr}"] = str(exc)
    scan()

import importlib.metadata as md
dists = md.packages_distributions()
tops = {n.split(".")[0] for n in sys.modules}
versions = {}
for top in tops:
    for dist in dists.get(top, [])[:1]:
        try:
            versions[top] = f"{dist} {md.version(dist)}"
        except md.PackageNotFoundError:
            pass
import os, site
paths = sysconfig.get_paths()
std = (paths["stdlib"], paths["platstdlib"])
# Where packages come from: the install scheme's, site's, then whatever else is on sys.path
# (Debian's /usr/lib/python3/dist-packages, an editable install's src/, PYTHONPATH).
dirs = [paths["purelib"], paths["platlib"], *site.getsitepackages(),
        *(p for p in sys.path if p and os.path.isdir(p) and not any(p == s or p.startswith(s + "/") for s in std))]
print(json.dumps({
    "executable": sys.executable, "prefix": sys.prefix, "base_prefix": sys.base_prefix,
    "stdlib": paths["stdlib"], "platstdlib": paths["platstdlib"],
    "site": list(dict.fromkeys(os.path.normpath(d) for d in dirs)),
    "version": sys.version.split()[0], "cache_tag": sys.implementation.cache_tag,
    "magic": importlib.util.MAGIC_NUMBER.hex(),
    "modules": {n: m.__file__ for n, m in list(sys.modules.items()) if getattr(m, "__file__", None)},
    "eager": sorted(eager), "startup": sorted(startup), "failed": failed, "versions": versions,
}))
"""


@dataclass(frozen=True)
class Probe:
    """What an interpreter loaded to run the guest's entry points, and where its parts live."""

    executable: str
    prefix: str
    base_prefix: str
    stdlib: str
    platstdlib: str
    site: tuple[str, ...]               # the first is where latscope goes (the install scheme's purelib)
    version: str
    cache_tag: str
    magic: str
    modules: dict[str, str]
    eager: frozenset[str]
    #: Loaded before the entry points, by the interpreter's start-up (site, and .pth files' imports).
    startup: frozenset[str] = frozenset()
    versions: dict[str, str] = field(default_factory=dict)


def probe(python: str | None = None, entries: tuple[str, ...] = ENTRY_MODULES + EXTRA_MODULES) -> Probe:
    """Run the import probe in ``python`` (default: this interpreter, which the guest runs too)."""
    python = python or sys.executable
    try:
        proc = subprocess.run([python, "-c", _PROBE, json.dumps(list(entries))], capture_output=True, text=True,
                              timeout=180, check=False, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TopologyError(f"cannot run {python} to see what the guest imports: {exc}") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise TopologyError(f"{python} cannot import the guest's entry points: {last}")
    doc = json.loads(proc.stdout)
    return Probe(doc["executable"], doc["prefix"], doc["base_prefix"], doc["stdlib"], doc["platstdlib"],
                 tuple(doc["site"]), doc["version"], doc["cache_tag"], doc["magic"], dict(doc["modules"]),
                 frozenset(doc["eager"]), frozenset(doc["startup"]), dict(doc["versions"]))


@dataclass(frozen=True)
class Selection:
    """Files for the image: guest path -> host path, and which of them get bytecode."""

    files: dict[str, str]
    compiled: frozenset[str]            # guest paths of .py files to compile
    extensions: tuple[str, ...]         # host paths of extension modules (their libraries come from ldd)
    packages: dict[str, str]            # site-packages top-level name -> "dist version" (or "")
    left_out: tuple[str, ...]           # site-packages packages the probe reached but that stay out


def _under(path: str, root: str) -> str | None:
    """``path`` relative to ``root``, or None when it is not below it."""
    rel = os.path.relpath(path, root)
    return None if rel == "." or rel.startswith("..") else rel


def _tree(root: Path, left_out: frozenset[str], top_left_out: frozenset[str] = frozenset()) -> list[Path]:
    """Python source files below ``root``, without directories named in ``left_out``."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        at_top = Path(dirpath) == root
        dirnames[:] = sorted(d for d in dirnames
                             if d not in left_out and not (at_top and (d in top_left_out or d.startswith("config-"))))
        out += [Path(dirpath) / f for f in sorted(filenames)
                if f.endswith(".py") and not (at_top and f in top_left_out)]
    return out


def select(p: Probe, latscope_dir: Path) -> Selection:
    """Apply the rules of the module docstring to a probe's answer."""
    files: dict[str, str] = {}
    compiled: set[str] = set()
    extensions: list[str] = []
    site_dest = p.site[0]
    for f in _tree(Path(p.stdlib), STDLIB_LEFT_OUT_BELOW, STDLIB_LEFT_OUT):
        files[str(f)] = str(f)
    tops: dict[tuple[str, str], bool] = {}  # (site dir, top) -> needed at start-up
    for name, path in sorted(p.modules.items()):
        top = name.split(".")[0]
        if top == "latscope":
            continue
        site = next((s for s in p.site if _under(path, s)), None)
        if site is not None and name in p.startup:
            continue  # a .pth file's import (setuptools' _distutils_hack): the image has no .pth files
        rel = _under(path, site) if site is not None else None
        if site is not None and rel is not None:
            key = (site, rel.split(os.sep)[0])
            tops[key] = tops.get(key, False) or name in p.eager
            continue
        rel = _under(path, p.stdlib) or _under(path, p.platstdlib)
        if rel is None:
            raise TopologyError(f"the guest imports {name} from {path}, outside the standard library and "
                                "site-packages: the initramfs cannot tell what to copy")
        if rel.split(os.sep)[0] in STDLIB_LEFT_OUT:
            raise TopologyError(f"the guest imports {name} from {rel}, which the initramfs leaves out")
        if path.endswith(".py"):
            compiled.add(path)
        else:
            files[path] = path
            extensions.append(path)
    packages: dict[str, str] = {}
    left_out: list[str] = []
    for (site, top), eager in sorted(tops.items()):
        name = top.split(".")[0]
        if top.endswith((".pth", ".dist-info")) or (name in HEAVY and not eager):
            left_out.append(name)
            continue
        root = Path(site) / top
        for f in (_tree(root, PACKAGE_LEFT_OUT) if root.is_dir() else [root] if top.endswith(".py") else []):
            files[str(f)] = str(f)
        for path in p.modules.values():
            if _under(path, str(root)) is not None or path == str(root):
                if path.endswith(".py"):
                    compiled.add(path)
                else:
                    files[path] = path
                    extensions.append(path)
        packages[name] = p.versions.get(name, "")
    # latscope itself: all of it (templates too), where site-packages would hold it.
    for f in sorted(latscope_dir.rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts:
            files[str(Path(site_dest) / "latscope" / f.relative_to(latscope_dir))] = str(f)
    for name, path in p.modules.items():
        rel = _under(path, str(latscope_dir))
        if (name == "latscope" or name.startswith("latscope.")) and rel is not None:
            compiled.add(str(Path(site_dest) / "latscope" / rel))
    missing = sorted(c for c in compiled if c not in files)
    if missing:
        raise TopologyError(f"the guest imports {missing[0]}, which the initramfs leaves out")
    return Selection(files, frozenset(compiled), tuple(sorted(set(extensions))), packages,
                     tuple(sorted(set(left_out))))
