"""How the `latscope` command ends: exit handlers run, output is complete, the exit code is the verb's.

program() ends the process with os._exit once the verb is done (Arrow's thread pools can abort a normal
teardown); these check that nothing a normal exit would give is lost.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CODE = """
import atexit, sys
from latscope.cli import main as m
atexit.register(lambda: print("exit handler ran", file=sys.stderr))
argv = sys.argv[2:]
if sys.argv[1] == "program":
    sys.argv = ["latscope", *argv]
    sys.exit(m.program())
sys.exit(m.main(argv))
"""


def _run(how: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CODE, how, *argv], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("argv", [["--help"], ["ls", "--json"], ["show", "no-such-run"], ["no-such-verb"]],
                         ids=["help", "ls-json", "missing-run", "bad-verb"])
def test_program_ends_as_a_normal_exit_would(argv: list[str], tmp_path: Path) -> None:
    """Same stdout, stderr and exit code as main() followed by the interpreter's own exit; handlers ran."""
    args = [*argv, "--results", str(tmp_path)] if argv[0] in ("ls", "show") else argv
    quick, normal = _run("program", *args), _run("main", *args)
    assert (quick.returncode, quick.stdout, quick.stderr) == (normal.returncode, normal.stdout, normal.stderr)
    assert quick.stderr.endswith("exit handler ran\n")
    assert quick.stdout or quick.returncode != 0


def test_a_closed_pipe_is_no_error() -> None:
    """`latscope --help | head -1`: the reader goes away; the command ends quietly."""
    proc = subprocess.Popen([sys.executable, "-c", CODE, "program", "--help"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(60) in (0, 1)
    assert "Traceback" not in err and "Exception ignored" not in err, err


@pytest.mark.parametrize("closed", ["stdout", "stderr"])
def test_a_stream_closed_from_the_start_is_no_error(closed: str, tmp_path: Path) -> None:
    """`latscope ls >&-` (Python then has no sys.stdout): the verb's own exit code, no traceback."""
    fd = 1 if closed == "stdout" else 2
    for how, argv, code in (("program", ["ls", "--results", str(tmp_path)], 0),
                            ("program", ["show", "no-such-run", "--results", str(tmp_path)], 2)):
        r = subprocess.run(["sh", "-c", f'exec "$@" {fd}>&-', "sh", sys.executable, "-c", CODE, how, *argv],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == code, (argv, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr + r.stdout


def test_duckdb_draws_no_progress_bar_into_the_output() -> None:
    """A long `latscope sql` query would get DuckDB's progress bar on stdout, inside CSV or JSON."""
    import pyarrow as pa

    from latscope.store.catalog import open_views

    con = open_views(pa.table({"run_id": ["a"]}), "SELECT 1 AS x", [], None)
    assert con.execute("SELECT current_setting('enable_progress_bar')").fetchone()[0] is False
