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
