"""What goes into the self-contained guest initramfs (--vm-root initramfs), and what is left out."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from latscope.errors import TopologyError
from latscope.topo.vm import pyimage
from latscope.topo.vm.pyimage import Probe, select


def _touch(root: Path, *rels: str) -> None:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"# {rel}\n")


@pytest.fixture
def fake(tmp_path: Path):
    """An interpreter's tree: a standard library, a venv's site-packages and latscope in src/."""
    std = tmp_path / "py/lib/python3.11"
    _touch(std, "os.py", "json/__init__.py", "json/decoder.py", "zipfile.py", "test/support/__init__.py",
           "idlelib/idle.py", "tkinter/__init__.py", "lib2to3/main.py", "ensurepip/__init__.py",
           "pydoc_data/topics.py", "turtle.py", "config-3.11-x86_64-linux-gnu/python-config.py",
           "ctypes/__init__.py", "ctypes/test/test_arrays.py", "unittest/test/test_case.py",
           "encodings/__pycache__/utf_8.cpython-311.pyc", "lib-dynload/_json.so", "lib-dynload/_tkinter.so")
    site = tmp_path / "venv/lib/python3.11/site-packages"
    _touch(site, "numpy/__init__.py", "numpy/_core/__init__.py", "numpy/_core/_multiarray_umath.so",
           "numpy/_core/_simd.so", "numpy/_core/tests/test_api.py", "numpy/f2py/__init__.py", "numpy/lib/npyio.py",
           "pyroute2/__init__.py", "pyroute2/netns/__init__.py", "scipy/__init__.py", "scipy/stats.py",
           "pyarrow/__init__.py", "pyarrow/lib.so", "_distutils_hack/__init__.py", "six.py")
    src = tmp_path / "src/latscope"
    _touch(src, "__init__.py", "remote/agent.py", "report/templates/report.html.j2", "report/html.py")

    def probe(**modules_by_kind) -> Probe:
        mods = {"os": f"{std}/os.py", "json": f"{std}/json/__init__.py", "json.decoder": f"{std}/json/decoder.py",
                "_json": f"{std}/lib-dynload/_json.so", "_distutils_hack": f"{site}/_distutils_hack/__init__.py",
                "latscope": f"{src}/__init__.py", "latscope.remote.agent": f"{src}/remote/agent.py",
                "numpy": f"{site}/numpy/__init__.py", "numpy._core": f"{site}/numpy/_core/__init__.py",
                "numpy._core._multiarray_umath": f"{site}/numpy/_core/_multiarray_umath.so"}
        lazy = dict(modules_by_kind.get("lazy", {}))
        eager = dict(modules_by_kind.get("eager", {}))
        mods.update(eager)
        mods.update(lazy)
        return Probe(executable=f"{tmp_path}/venv/bin/python", prefix=f"{tmp_path}/venv",
                     base_prefix=f"{tmp_path}/py", stdlib=str(std), platstdlib=str(std), site=(str(site),),
                     version="3.11.7", cache_tag="cpython-311", magic="a70d0d0a", modules=mods,
                     eager=frozenset(set(mods) - set(lazy)), startup=frozenset({"os", "_distutils_hack"}),
                     versions={"numpy": "numpy 2.4.6", "pyroute2": "pyroute2 0.9.7"})

    return probe, std, site, src


def test_standard_library_without_tests_gui_and_packaging(fake) -> None:
    """Every stdlib .py except test/ (at any depth), idlelib, tkinter, lib2to3, ensurepip, pydoc_data, config-*."""
    probe, std, _site, src = fake
    sel = select(probe(), src)
    assert {f"{std}/os.py", f"{std}/json/decoder.py", f"{std}/zipfile.py", f"{std}/ctypes/__init__.py"} \
        <= set(sel.files)
    for gone in ("ctypes/test/test_arrays.py", "unittest/test/test_case.py", "test/support/__init__.py",
                 "idlelib/idle.py", "tkinter/__init__.py", "lib2to3/main.py",
                 "ensurepip/__init__.py", "pydoc_data/topics.py", "turtle.py",
                 "config-3.11-x86_64-linux-gnu/python-config.py"):
        assert f"{std}/{gone}" not in sel.files, gone
    # The host's bytecode never comes along; bytecode is made for what was imported.
    assert not [f for f in sel.files if "__pycache__" in f]
    # Extension modules: only those imported.
    assert f"{std}/lib-dynload/_json.so" in sel.files and f"{std}/lib-dynload/_tkinter.so" not in sel.files
    assert f"{std}/lib-dynload/_json.so" in sel.extensions


def test_site_packages_that_were_imported_without_their_tests(fake) -> None:
    """numpy in (no tests/, no f2py, only imported extension modules); pyroute2 in when a lazy import needs it."""
    probe, _std, site, src = fake
    sel = select(probe(lazy={"pyroute2": f"{site}/pyroute2/__init__.py"}), src)
    assert f"{site}/numpy/lib/npyio.py" in sel.files  # not imported, but numpy may import it later
    assert f"{site}/numpy/_core/tests/test_api.py" not in sel.files
    assert f"{site}/numpy/f2py/__init__.py" not in sel.files
    assert f"{site}/numpy/_core/_multiarray_umath.so" in sel.files and f"{site}/numpy/_core/_simd.so" not in sel.files
    assert f"{site}/pyroute2/netns/__init__.py" in sel.files
    assert sel.packages == {"numpy": "numpy 2.4.6", "pyroute2": "pyroute2 0.9.7"}
    # Not imported at all: out. Imported by a .pth file at start-up: out (the image has no .pth files).
    assert not [f for f in sel.files if "/scipy/" in f or "/pyarrow/" in f or "six.py" in f]
    assert not [f for f in sel.files if "_distutils_hack" in f]


def test_heavy_packages_only_when_an_entry_point_cannot_start_without_them(fake) -> None:
    """scipy reached through a lazy import stays out; pyarrow imported at start-up by the worker comes in."""
    probe, _std, site, src = fake
    sel = select(probe(lazy={"scipy": f"{site}/scipy/__init__.py", "scipy.stats": f"{site}/scipy/stats.py"},
                       eager={"pyarrow": f"{site}/pyarrow/__init__.py", "pyarrow.lib": f"{site}/pyarrow/lib.so"}),
                 src)
    assert "scipy" in sel.left_out and not [f for f in sel.files if "/scipy/" in f]
    assert f"{site}/pyarrow/lib.so" in sel.files and "pyarrow" in sel.packages


def test_latscope_goes_to_site_packages_whole_and_imported_modules_get_bytecode(fake) -> None:
    """latscope from src/ lands in the venv's site-packages with its templates; bytecode for imported modules."""
    probe, std, site, src = fake
    sel = select(probe(), src)
    assert sel.files[f"{site}/latscope/report/templates/report.html.j2"] == f"{src}/report/templates/report.html.j2"
    assert sel.files[f"{site}/latscope/report/html.py"] == f"{src}/report/html.py"
    assert f"{site}/latscope/remote/agent.py" in sel.compiled
    assert f"{site}/latscope/report/html.py" not in sel.compiled  # the guest never imports it
    assert f"{std}/json/decoder.py" in sel.compiled and f"{std}/zipfile.py" not in sel.compiled
    assert f"{site}/numpy/__init__.py" in sel.compiled


def test_an_imported_module_in_a_left_out_part_is_an_error(fake) -> None:
    """If the guest needs what the rules leave out, the build says so instead of a guest that cannot start."""
    probe, std, _site, src = fake
    with pytest.raises(TopologyError, match="test.support"):
        select(probe(eager={"test.support": f"{std}/test/support/__init__.py"}), src)


@pytest.mark.slow
def test_this_interpreter_gives_the_guest_numpy_and_pyroute2_but_not_the_analysis_stack() -> None:
    """The real probe of the interpreter the guest runs: what the agent, workers and collectors need."""
    p = pyimage.probe()
    assert p.executable == sys.executable
    import latscope

    sel = select(p, Path(latscope.__file__).resolve().parent)
    assert {"numpy", "pyroute2"} <= set(sel.packages)
    for heavy in ("scipy", "matplotlib", "duckdb", "rich", "click"):
        assert heavy not in sel.packages and not [f for f in sel.files if f"/site-packages/{heavy}/" in f]
    assert not [f for f in sel.files if "/test/" in f and f.startswith(p.stdlib)]
    assert not [f for f in sel.files if "/tkinter/" in f or "/idlelib/" in f]
    worker = f"{p.site[0]}/latscope/probe/worker.py"
    assert worker in sel.compiled and f"{p.site[0]}/latscope/env/collect.py" in sel.compiled
    assert any(f.endswith("/zipfile.py") for f in sel.compiled)  # numpy.savez imports it in the worker
