"""Hostile campaign files and state files: one line, a non-zero exit, in bounded time and memory, never a traceback."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from latscope.errors import ConfigError
from latscope.experiment.campaign import load
from tests.hostile.conftest import one_line_error

pytestmark = pytest.mark.hostile

BASE = 'name = "h"\n[base]\ntopology = "loopback"\ncount = 300\n'


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text", [
    'name = "x"\nv = ' + "[" * 100_000 + "]" * 100_000 + "\n",
    'name = "x"\nv = ' + "{a=" * 5000 + "1" + "}" * 5000 + "\n",
], ids=["nested-arrays", "nested-inline-tables"])
def test_deeply_nested_toml_is_one_line(latscope, tmp_path: Path, text: str) -> None:
    """tomllib recurses once per level: a deep nesting must be a refusal, not a RecursionError traceback."""
    r = latscope("campaign", "plan", str(write(tmp_path, text)), timeout=60)
    assert r.returncode == 2
    assert "nested" in one_line_error(r)


@pytest.mark.parametrize("key", ["a." * 50_000 + "b", '"a".' * 30_000 + "b"], ids=["bare", "quoted"])
def test_long_dotted_keys_are_refused_quickly(tmp_path: Path, key: str) -> None:
    """tomllib is quadratic in the parts of one dotted key: 50 000 parts took minutes. Refused, at once."""
    path = write(tmp_path, f'name = "x"\n{key} = 1\n')
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="dotted"):
        load(path)
    assert time.monotonic() - t0 < 10


def test_many_factors_are_refused_before_the_cells_are_built(tmp_path: Path) -> None:
    """60 factors of 2 levels are 2**60 cells: counted, not built (it ate 4 GB and never ended)."""
    factors = "\n".join(f"f{i} = {{ a = {{}}, b = {{}} }}" for i in range(60))
    path = write(tmp_path, BASE + "[factors]\n" + factors + "\n")
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"cells: at most 1024"):
        load(path)
    assert time.monotonic() - t0 < 10


def test_plan_json_of_many_runs_is_linear(latscope, tmp_path: Path) -> None:
    """The plan's fingerprint (a hash of every cell) is computed once, not once per run's tags."""
    levels = ", ".join(f"l{i} = {{}}" for i in range(32))
    text = ('name = "big"\nrepeats = 20\n[base]\ntopology = "loopback"\ncount = 300\n[factors]\n'
            f"f = {{ {levels} }}\ng = {{ {levels} }}\n")
    c = load(write(tmp_path, text))
    t0 = time.monotonic()
    tags = [c.run_tags(r) for r in c.plan()]
    assert len(tags) == 1024 * 20
    assert time.monotonic() - t0 < 10
    assert len({t[3] for t in tags}) == 1  # one plan=...


@pytest.mark.parametrize(("line", "needle"), [
    ('"name=evil" = true', "option name"),
    ('"results=/tmp/elsewhere" = true', "option name"),
    ('"count=5 --results" = "/x"', "option name"),
    ('"" = 1', "option name"),
    ('"stream log" = true', "option name"),
    ('tag = ["cell=other"]', "campaign's own"),
    ('tag = ["repeat=0"]', "campaign's own"),
    ('tag = ["plan=0"]', "campaign's own"),
    ('tag = ["campaign=x"]', "campaign's own"),
    ('tag = "f=b"', "campaign's own"),
])
def test_options_that_would_change_what_the_campaign_sets_are_refused(tmp_path: Path, line: str, needle: str) -> None:
    """An option name is a run option's name; a tag cannot forge the tags that tie a run to its place.

    `"name=evil" = true` became `--name=evil`, passing the check of reserved names; a user tag
    `cell=other` gave each run two cell= tags, and the runner adopted runs by whichever came first.
    """
    path = write(tmp_path, BASE + line + "\n[factors]\nf = { a = {}, b = {} }\n")
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert needle in str(exc.value)
    assert str(exc.value).startswith(f"{path}:")


def state_of(results: Path, name: str = "h") -> Path:
    return results / ".campaigns" / name / "state.json"


@pytest.mark.parametrize("edit", [
    lambda e: e.update(status="bogus"),
    lambda e: e.update(attempts="x"),
    lambda e: e.update(attempts=[5]),
    lambda e: e.update(status="running", pid="abc"),
    lambda e: e.update(status="done", run_id=7),
    lambda e: e.clear(),
], ids=["status", "attempts", "attempt", "pid", "run_id", "empty"])
def test_a_hand_edited_state_is_one_line(latscope, results: Path, tmp_path: Path, edit) -> None:
    """Entries of the wrong shape: status and run refuse the state with one line (no traceback, no run made)."""
    path = write(tmp_path, BASE + "[factors]\nf = { a = {}, b = {} }\n")
    r = latscope("campaign", "run", str(path), "--max-runs", "1", "--results", str(results), timeout=120)
    assert r.returncode == 0, r.stderr
    state = state_of(results)
    doc = json.loads(state.read_text())
    for entry in doc["runs"].values():
        edit(entry)
    state.write_text(json.dumps(doc))
    before = sorted(p.name for p in results.iterdir())
    for verb, extra in (("status", []), ("run", ["--max-runs", "1"])):
        r = latscope("campaign", verb, str(path), "--results", str(results), *extra, timeout=120)
        assert r.returncode == 1, (verb, r.stderr)
        assert "campaign state" in one_line_error(r)
    assert sorted(p.name for p in results.iterdir()) == before
    assert json.loads(state.read_text()) == doc


def test_a_campaign_file_that_is_a_fifo_or_device_is_refused(latscope, tmp_path: Path) -> None:
    fifo = tmp_path / "c.toml"
    subprocess.run(["mkfifo", str(fifo)], check=True)
    for target in (fifo, Path("/dev/zero")):
        r = latscope("campaign", "plan", str(target), timeout=30)
        assert r.returncode == 2
        assert "not a regular file" in one_line_error(r)
