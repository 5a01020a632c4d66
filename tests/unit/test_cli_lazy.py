"""`latscope --help` lists every verb without importing any of them; each verb loads only its own module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from latscope.cli.main import VERBS, cli

NOT_FOR_HELP = ("numpy", "pyarrow", "duckdb", "scipy", "matplotlib", "jinja2", "pyroute2", "rich", "latscope.store",
                "latscope.analysis", "latscope.probe", "latscope.trace", "latscope.session",
                *(target.split(":")[0] for target, _ in VERBS.values()))


def _loaded_after(argv: list[str], prefixes: tuple[str, ...]) -> tuple[int, str, list[str]]:
    """(exit code, stdout, modules with those prefixes) of ``latscope ARGV`` in a fresh interpreter."""
    code = ("import sys\nfrom latscope.cli.main import main\n"
            f"rc = main({argv!r})\nsys.stdout.flush()\n"
            f"print('\\n'.join(sorted(m for m in sys.modules if m.startswith({prefixes!r}))), file=sys.stderr)\n"
            "sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr.split()


def test_help_lists_every_verb_and_imports_none() -> None:
    """--help shows each verb with its summary while numpy, pyarrow and every verb's module stay unloaded."""
    rc, out, loaded = _loaded_after(["--help"], NOT_FOR_HELP)
    assert rc == 0
    assert loaded == []
    listed = [line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.startswith("  ")]
    assert listed == list(VERBS)
    assert all(line.split(maxsplit=1)[1][:20] == VERBS[line.split()[0]][1][:20]
               for line in out.split("Commands:")[1].splitlines() if line.startswith("  "))


def test_a_verb_loads_its_module_and_not_the_others() -> None:
    """`latscope ls --help` imports latscope.cli.ls only, of all the verbs."""
    verbs = tuple(target.split(":")[0] for target, _ in VERBS.values())
    rc, _out, loaded = _loaded_after(["ls", "--help"], verbs)
    assert rc == 0 and loaded == ["latscope.cli.ls"]


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_listed_summary_is_the_commands_own(verb: str) -> None:
    """The summary --help lists for a verb is the first sentence of that command's help."""
    cmd = cli.get_command(click.Context(cli), verb)
    assert cmd is not None and cmd.name is not None
    assert VERBS[verb][1] == cmd.get_short_help_str(limit=1000)


def test_the_command_does_not_import_pandas_where_it_is_installed(tmp_path: Path) -> None:
    """pyarrow would import pandas (0.45 s of CPU) at its first conversion; the `latscope` command blocks it.

    An import stores a run (pyarrow writes Parquet) and `show` reads it back (pyarrow converts to numpy).
    """
    pytest.importorskip("pandas")
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "import" / "irtt-lo-midpoint.json"
    # program() ends the process itself once the verb is done: the check runs as an exit handler
    code = ("import atexit, sys\nfrom latscope.cli.main import program\n"
            "atexit.register(lambda: print('pandas' in sys.modules, 'pyarrow' in sys.modules, file=sys.stderr))\n"
            "sys.argv = ['latscope', *sys.argv[1:]]\nsys.exit(program())")
    for argv in (["import", "irtt", str(fixture), "--name", "p"], ["show", "p", "--json"]):
        r = subprocess.run([sys.executable, "-c", code, *argv, "--results", str(tmp_path)], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stderr.split()[-2:] == ["False", "True"], r.stderr


def test_the_command_runs_numpy_on_one_thread_unless_told_otherwise(tmp_path: Path) -> None:
    """numpy's OpenBLAS would start a thread per CPU (spinning at start-up); `latscope` keeps it to one, and a
    user's own OPENBLAS_NUM_THREADS wins. (OpenBLAS's threads carry the process's name; pyarrow's allocator
    has a thread of its own, named otherwise.)"""
    import os

    code = ("import atexit, os, sys\nfrom latscope.cli.main import program\n"
            "def threads():\n"
            "    names = [open(f'/proc/self/task/{t}/comm').read() for t in os.listdir('/proc/self/task')]\n"
            "    print('numpy' in sys.modules, names.count(open('/proc/self/comm').read()), file=sys.stderr)\n"
            "atexit.register(threads)\n"
            "sys.argv = ['latscope', *sys.argv[1:]]\nsys.exit(program())")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    expect = {None: "1", "2": "2"}
    for told, threads in expect.items():
        r = subprocess.run([sys.executable, "-c", code, "ls", "--results", str(tmp_path)], capture_output=True,
                           text=True, timeout=60, env={**env, **({"OPENBLAS_NUM_THREADS": told} if told else {})})
        assert r.returncode == 0, r.stderr
        assert r.stderr.split()[-2:] == ["True", threads], (told, r.stderr)
