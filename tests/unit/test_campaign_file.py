"""Campaign files: what is refused (with its line), the plan's order, the cells' options, the fingerprint."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from latscope.errors import ConfigError
from latscope.experiment.campaign import argv, expected_seconds, load

SEED = """\
# the seed's fs experiment, small
name = "seed"
repeats = 3
seed = 7

[base]
topology = "veth"
count = 500

[factors]
stress = { none = {}, udp3 = { stress = ["net:udp,streams=3"] } }
log = { deferred = {}, streamed = { stream-log = true } }
"""


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        load(write(tmp_path, text))
    return str(exc.value)


def test_cells_are_every_combination_with_merged_options(tmp_path: Path) -> None:
    c = load(write(tmp_path, SEED))
    cells = {cell.name: cell for cell in c.cells}
    assert set(cells) == {"none+deferred", "none+streamed", "udp3+deferred", "udp3+streamed"}
    assert cells["udp3+streamed"].options == {"topology": "veth", "count": 500, "stress": ["net:udp,streams=3"],
                                             "stream-log": True}
    assert argv(cells["udp3+streamed"].options) == ["--topology", "veth", "--count", "500", "--stress",
                                                   "net:udp,streams=3", "--stream-log"]
    assert c.baseline == {"stress": "none", "log": "deferred"}


def test_interleaved_order_makes_every_cell_once_per_round_in_a_seeded_order(tmp_path: Path) -> None:
    c = load(write(tmp_path, SEED))
    plan = c.plan()
    assert len(plan) == 12 and [r.index for r in plan] == list(range(12))
    rounds = [plan[i:i + 4] for i in range(0, 12, 4)]
    for r, runs in enumerate(rounds):
        assert sorted(x.cell.name for x in runs) == sorted(cell.name for cell in c.cells)
        assert {x.repeat for x in runs} == {r}
    orders = [tuple(x.cell.name for x in runs) for runs in rounds]
    assert len(set(orders)) > 1, "every round in the same order: drift would line up with the cells"
    assert [x.key for x in load(write(tmp_path, SEED, "again.toml")).plan()] == [x.key for x in plan]
    other = load(write(tmp_path, SEED.replace("seed = 7", "seed = 8"), "other.toml")).plan()
    assert [x.key for x in other] != [x.key for x in plan]


def test_sequential_order_keeps_a_cells_repeats_together(tmp_path: Path) -> None:
    c = load(write(tmp_path, SEED.replace("seed = 7", 'order = "sequential"')))
    names = [r.cell.name for r in c.plan()]
    assert names == [n for n in (cell.name for cell in c.cells) for _ in range(3)]


def test_fingerprint_ignores_layout_and_follows_the_plan(tmp_path: Path) -> None:
    a = load(write(tmp_path, SEED))
    b = load(write(tmp_path, "# another comment\n" + SEED.replace("count = 500", "count    =   500"), "b.toml"))
    assert a.fingerprint == b.fingerprint
    c = load(write(tmp_path, SEED.replace("count = 500", "count = 501"), "c2.toml"))
    assert c.fingerprint != a.fingerprint
    assert load(a.path, {"count": "600"}).fingerprint != a.fingerprint
    assert load(a.path, repeats=2).fingerprint != a.fingerprint


def test_set_overrides_base_but_not_levels(tmp_path: Path) -> None:
    p = write(tmp_path, SEED.replace('stream-log = true', 'stream-log = true, count = 900'))
    c = load(p, {"count": "50", "spin": "20us", "stream-log": "false"})
    cells = {cell.name: cell for cell in c.cells}
    assert cells["none+deferred"].options["count"] == 50
    assert cells["none+deferred"].options["spin"] == "20us"
    assert cells["none+deferred"].options["stream-log"] is False
    assert cells["none+streamed"].options["count"] == 900
    assert cells["none+streamed"].options["stream-log"] is True


def test_list_options_of_two_factors_add_up(tmp_path: Path) -> None:
    text = SEED.replace('log = {', 'cpu = { idle = {}, hog = { stress = ["cpu:workers=1"] } }\nlog = {')
    cells = {cell.name: cell for cell in load(write(tmp_path, text)).cells}
    assert cells["udp3+hog+deferred"].options["stress"] == ["net:udp,streams=3", "cpu:workers=1"]
    assert cells["none+idle+deferred"].options.get("stress") is None


@pytest.mark.parametrize("text, line, words", [
    ("bogus = 1\n" + SEED, 1, "unknown key 'bogus'"),
    (SEED + "bogus = 1\n", 13, "factor 'bogus' needs levels"),
    (SEED.replace('name = "seed"', 'name = "a b"'), 2, "`name`"),
    (SEED.replace("repeats = 3", "repeats = 0"), 3, "repeats"),
    (SEED.replace("repeats = 3", 'order = "random"'), 3, "order"),
    (SEED.replace("count = 500", "name = \"x\""), 8, "cannot be set in a campaign"),
    (SEED.replace("count = 500", "--count = 500"), 8, "without dashes"),
    (SEED.replace('udp3 = { stress = ["net:udp,streams=3"] }', "udp3 = { stress = { a = 1 } }"), 11,
     "factors.stress.udp3.stress: a value is"),
    (SEED + "[baseline]\nstress = \"udp4\"\n", 14, "no level 'udp4'"),
    (SEED + "[baseline]\nnosuch = \"udp3\"\n", 14, "no factor 'nosuch'"),
    (SEED.replace("log = {", "size = { s = { size = 100 } }\nlog = {")
     .replace("streamed = { stream-log = true }", "streamed = { size = 200 }"), 13, "both set `size`"),
    ("name = 'x'\n[factors]\nf = {}\n", 3, "needs levels"),
    ("name = 'x'\nrepeats = \"3\"\n", 2, "integer"),
    ("name = 'x'\nskip_warmup = \"3 parsecs\"\n", 2, "skip_warmup"),
    ("name = 'x'\nfrom = \"5s\"\nto = \"2s\"\n", 3, "after `from`"),
    ("name = [\n", 1, "not valid TOML"),
])
def test_a_bad_file_is_refused_with_its_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    message = refused(tmp_path, text)
    assert words in message
    assert message.startswith(f"{tmp_path / 'c.toml'}:{line}:") or "not valid TOML" in message, message


def test_unreadable_and_binary_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read campaign file"):
        load(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="cannot read campaign file"):
        load(tmp_path)
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(ConfigError, match="not a text file"):
        load(p)


def test_tags_tie_a_run_to_its_place(tmp_path: Path) -> None:
    c = load(write(tmp_path, SEED))
    run = c.plan()[5]
    tags = Counter(t.split("=")[0] for t in c.run_tags(run))
    assert tags == Counter({"campaign": 1, "cell": 1, "repeat": 1, "plan": 1, "stress": 1, "log": 1})
    assert f"repeat={run.repeat}" in c.run_tags(run) and f"plan={c.fingerprint}" in c.run_tags(run)
    assert c.run_name(run) == f"seed-{run.cell.name}-{run.repeat}"


def test_expected_time_follows_count_period_duration_and_topology() -> None:
    assert expected_seconds({"count": 1000, "period": "2ms"}) == pytest.approx(2.0 + 4.0)
    assert expected_seconds({"duration": "30s", "topology": "vm"}) == pytest.approx(30.0 + 60.0)


def test_a_trial_has_its_own_state_and_an_edited_file_is_refused(tmp_path: Path) -> None:
    from latscope.experiment.runner import State

    text = 'name = "tr"\n[base]\ntopology = "loopback"\ncount = 500\n'
    camp = write(tmp_path, text)
    root = tmp_path / "results"
    trial = State.open(root, load(camp, {"count": "100"}, 1), create=True)   # a trial makes its own state
    real = State.open(root, load(camp), create=True)                         # the real campaign is not in its way
    assert trial.path != real.path and trial.path.parent.parent == real.path.parent / "trials"
    assert State.open(root, load(camp, {"count": "100"}, 1), create=False).path == trial.path
    camp.write_text(text.replace("count = 500", "count = 600"))
    with pytest.raises(ConfigError) as exc:
        State.open(root, load(camp), create=False)                          # the file changed: refused
    msg = str(exc.value)
    assert "made for another plan" in msg and "file changed" in msg
    assert str(root / ".campaigns" / "tr") in msg
