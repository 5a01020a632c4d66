"""Campaign files: one experiment (factors x levels x repeats) in one TOML file, planned before any run.

A campaign names the options every run shares (``[base]``), its **factors**
(each a table of levels, each level a set of `latscope run` options by their
option name), how often each cell (one level of every factor) is repeated,
and in which order the runs are made. Everything is checked when the file is
read: an unknown key, an option `run` does not have, a value it refuses, two
factors that set the same option differently: each is an error with the line
of the file, before the first run. See docs/campaign.md.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import random
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from latscope.errors import ConfigError, FormatError
from latscope.files import read_regular
from latscope.safetext import MAX_TAG, MAX_TAGS, check_label, quote
from latscope.units import parse_duration_ns

#: A campaign file is small; a bigger one is a mistake (or an attack), not an experiment.
MAX_FILE_BYTES = 1 << 20
MAX_CELLS = 1024
MAX_REPEATS = 1000
ORDERS = ("interleaved", "sequential")
TOP_KEYS = ("name", "description", "repeats", "order", "seed", "base", "factors", "baseline", "skip_warmup",
            "from", "to", "retries")
#: `run` options a campaign sets itself for every run: a file may not set them.
RESERVED = {"name": "the campaign names each run", "results": "give --results to `latscope campaign`",
            "json": "the campaign reads each run's JSON itself", "quiet": "the campaign shows its own progress",
            "q": "the campaign shows its own progress", "help": "not a run option"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")
_OPTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
_LEVEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,23}$")
#: Seconds a run costs beyond its stream (namespaces, workers, storing), until the campaign has measured it.
OVERHEAD_S = {"vm": 60.0, "other": 4.0}

OptionValue = str | int | float | bool | list[str]


@dataclass(frozen=True)
class Cell:
    """One combination of levels, one per factor (in factor order), and the run options it makes."""

    name: str
    levels: tuple[tuple[str, str], ...]
    options: dict[str, OptionValue]

    def tags(self) -> list[str]:
        return [f"{factor}={level}" for factor, level in self.levels]


@dataclass(frozen=True)
class PlannedRun:
    """The index-th run of the campaign: which cell, which repeat."""

    index: int
    cell: Cell
    repeat: int

    @property
    def key(self) -> str:
        return f"{self.cell.name}/{self.repeat}"


@dataclass(frozen=True)
class Campaign:
    """A campaign file, read and checked."""

    path: Path
    name: str
    description: str
    repeats: int
    order: str
    seed: int
    base: dict[str, OptionValue]
    factors: tuple[tuple[str, tuple[str, ...]], ...]
    baseline: dict[str, str]
    cells: tuple[Cell, ...]
    skip_warmup_ns: int | None
    from_ns: int | None
    to_ns: int | None
    retries: int
    lines: dict[str, int] = field(default_factory=dict, compare=False)
    #: Made with --set/--repeats: a trial of the file's plan, with a state of its own (see runner.state_dir).
    trial: bool = False

    @functools.cached_property
    def fingerprint(self) -> str:
        """What identifies the plan: the same file (up to comments and layout) gives the same value."""
        doc = {"name": self.name, "repeats": self.repeats, "order": self.order, "seed": self.seed,
               "cells": [[c.name, c.options] for c in self.cells]}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]

    def plan(self) -> list[PlannedRun]:
        """Every run, in the order they are made.

        interleaved: every cell once per round, in a new seeded random order each
        round, so that a slow drift of the machine (thermal, background jobs,
        the host's steal) spreads over every level instead of lining up with one.
        sequential: all repeats of a cell, then the next cell (faster to read, blind to drift).
        """
        out: list[tuple[Cell, int]] = []
        if self.order == "sequential":
            out = [(c, r) for c in self.cells for r in range(self.repeats)]
        else:
            for r in range(self.repeats):
                cells = list(self.cells)
                random.Random(f"{self.seed}:{r}").shuffle(cells)
                out += [(c, r) for c in cells]
        return [PlannedRun(i, c, r) for i, (c, r) in enumerate(out)]

    def run_name(self, run: PlannedRun) -> str:
        return f"{self.name}-{run.cell.name}-{run.repeat}"

    def run_tags(self, run: PlannedRun) -> list[str]:
        """The tags that tie a stored run to its place in this campaign (and to this very plan)."""
        return [f"campaign={self.name}", f"cell={run.cell.name}", f"repeat={run.repeat}",
                f"plan={self.fingerprint}", *run.cell.tags()]

    def line_of(self, *path: str) -> int:
        """The line of the file where ``path`` (table names, then a key) is written; 1 if unknown."""
        for n in range(len(path), 0, -1):
            line = self.lines.get(".".join(path[:n]))
            if line:
                return line
        return 1

    def levels_of(self, factor: str) -> tuple[str, ...]:
        return dict(self.factors)[factor]


def load(path: str | Path, overrides: Mapping[str, str] | None = None, repeats: int | None = None) -> Campaign:
    """Read and check a campaign file (syntax, keys, values); ConfigError with the line when it is wrong.

    ``overrides`` (`--set OPTION=VALUE`) replace options of ``[base]`` (levels still override them) and
    ``repeats`` the file's repeats: a quick trial of a campaign at a small count. They are part of the
    plan, so its fingerprint (and the runs it adopts) differ from the file's own.
    """
    path = Path(path)
    try:
        raw = read_regular(path, MAX_FILE_BYTES)
    except OSError as exc:
        raise ConfigError(f"cannot read campaign file {quote(str(path))}: {exc.strerror or exc}") from None
    except FormatError as exc:
        raise ConfigError(f"cannot read campaign file: {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (UTF-8 TOML expected)") from None
    _check_depth(text, path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: arrays or tables nested too deeply to be a campaign") from None
    if overrides or repeats is not None:
        doc = dict(doc)
        base = dict(doc.get("base", {})) if isinstance(doc.get("base", {}), dict) else doc.get("base")
        if isinstance(base, dict):
            for key, value in (overrides or {}).items():
                base[key] = _scalar(value)
            doc["base"] = base
        if repeats is not None:
            doc["repeats"] = repeats
    campaign = parse(doc, path, key_lines(text))
    return replace(campaign, trial=True) if overrides or repeats is not None else campaign


#: Parts of a dotted key (`a.b.c = 1`) a campaign may have: tomllib's time grows with their square.
MAX_DOTS_PER_LINE = 64
_STRINGS = re.compile(r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'')


def _check_depth(text: str, path: Path) -> None:
    """Refuse a line with more than MAX_DOTS_PER_LINE dots outside strings (a key tomllib would take minutes on)."""
    bare = _STRINGS.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for n, line in enumerate(bare.split("\n"), start=1):
        if line.count(".") > MAX_DOTS_PER_LINE:
            raise ConfigError(f"{path}:{n}: a dotted key of more than {MAX_DOTS_PER_LINE} parts is not a campaign")


def _scalar(text: str) -> str | int | float | bool:
    """A --set value as TOML would read it unquoted: true/false, an integer, a float, else the string."""
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_sets(items: tuple[str, ...]) -> dict[str, str]:
    """`--set OPTION=VALUE` items as a mapping; ConfigError for one without '='."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {quote(item)}: expected OPTION=VALUE, e.g. --set count=500")
        out[key.strip()] = value
    return out


def parse(doc: Mapping[str, Any], path: Path, lines: dict[str, int] | None = None) -> Campaign:
    lines = lines or {}

    def fail(message: str, *where: str) -> ConfigError:
        line = _line(lines, where)
        return ConfigError(f"{path}:{line}: {message}")

    for key in doc:
        if key not in TOP_KEYS:
            raise fail(f"unknown key {quote(key)} (a campaign has {', '.join(TOP_KEYS)})", key)
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise fail("`name` must be given: letters, digits, '.', '_' or '-', at most 48, e.g. name = \"seed-fs\"",
                   "name")
    description = _typed(doc, "description", str, "", fail)
    repeats = _typed(doc, "repeats", int, 1, fail)
    if not 1 <= repeats <= MAX_REPEATS:
        raise fail(f"`repeats` must be between 1 and {MAX_REPEATS}", "repeats")
    order = _typed(doc, "order", str, "interleaved", fail)
    if order not in ORDERS:
        raise fail(f"`order` {quote(order)}: choose {' or '.join(ORDERS)}", "order")
    seed = _typed(doc, "seed", int, 0, fail)
    retries = _typed(doc, "retries", int, 1, fail)
    if not 0 <= retries <= 5:
        raise fail("`retries` must be between 0 and 5", "retries")
    windows: dict[str, int | None] = {}
    for key in ("skip_warmup", "from", "to"):
        value = doc.get(key)
        if value is None:
            windows[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise fail(f"`{key}` must be a duration such as \"2s\"", key)
        try:
            windows[key] = parse_duration_ns(str(value))
        except ConfigError as exc:
            raise fail(f"`{key}`: {exc}", key) from None
    if windows["from"] is not None and windows["to"] is not None and windows["to"] <= windows["from"]:
        raise fail("`to` must be after `from`", "to")
    base = _options(doc.get("base", {}), "base", fail)
    factors_doc = doc.get("factors", {})
    if not isinstance(factors_doc, dict):
        raise fail("`factors` must be a table: [factors.NAME] with one key per level", "factors")
    factors: list[tuple[str, tuple[str, ...]]] = []
    level_options: dict[tuple[str, str], dict[str, OptionValue]] = {}
    for fname, levels in factors_doc.items():
        if not _LEVEL.match(fname):
            raise fail(f"factor name {quote(fname)}: letters, digits, '.', '_' or '-', at most 24", "factors", fname)
        if not isinstance(levels, dict) or not levels:
            raise fail(f"factor {quote(fname)} needs levels: {fname} = {{ LEVEL = {{ OPTION = VALUE }}, ... }}",
                       "factors", fname)
        for lname, options in levels.items():
            if not _LEVEL.match(lname):
                raise fail(f"level name {quote(lname)}: letters, digits, '.', '_' or '-', at most 24",
                           "factors", fname, lname)
            level_options[(fname, lname)] = _options(options, f"factors.{fname}.{lname}", fail)
        factors.append((fname, tuple(levels)))
    baseline_doc = doc.get("baseline", {})
    if not isinstance(baseline_doc, dict):
        raise fail("`baseline` must be a table: baseline = { FACTOR = LEVEL }", "baseline")
    baseline = {f: levels[0] for f, levels in factors}
    for fname, lname in baseline_doc.items():
        if fname not in baseline:
            raise fail(f"baseline: no factor {quote(fname)}", "baseline", fname)
        if lname not in dict(factors)[fname]:
            raise fail(f"baseline: factor {fname} has no level {quote(str(lname))}", "baseline", fname)
        baseline[fname] = lname
    n_cells = math.prod(len(levels) for _, levels in factors)
    if n_cells > MAX_CELLS:  # counted first: 60 factors of 2 levels would be 2**60 cells to build
        raise fail(f"{n_cells} cells: at most {MAX_CELLS}", "factors")
    _check_user_tags(base, ("base",), factors, fail)
    for (fname, lname), options in level_options.items():
        _check_user_tags(options, ("factors", fname, lname), factors, fail)
    cells = []
    for combo in itertools.product(*[[(f, lv) for lv in levels] for f, levels in factors]):
        cname = "+".join(lv for _, lv in combo) if combo else "all"
        merged: dict[str, OptionValue] = dict(base)
        setter: dict[str, str] = {}
        for f, lv in combo:
            for opt, value in level_options[(f, lv)].items():
                if opt in setter and isinstance(value, list) and isinstance(merged[opt], list):
                    merged[opt] = [*merged[opt], *value]  # type: ignore[misc]
                    continue
                if opt in setter and merged[opt] != value:
                    raise fail(f"cell {cname}: factors {setter[opt]} and {f} both set `{opt}`, to different values",
                               "factors", f, lv, opt)
                if isinstance(value, list) and isinstance(merged.get(opt), list) and opt not in setter:
                    value = [*merged[opt], *value]  # type: ignore[misc]
                merged[opt] = value
                setter[opt] = f
        cells.append(Cell(cname, tuple(combo), merged))
    campaign = Campaign(path, name, description, repeats, order, seed, base, tuple(factors), baseline, tuple(cells),
                        windows["skip_warmup"], windows["from"], windows["to"], retries, lines)
    for cell in cells:
        tags = campaign.run_tags(PlannedRun(0, cell, repeats - 1))
        user = cell.options.get("tag", [])
        if len(tags) + (len(user) if isinstance(user, list) else 1) > MAX_TAGS:
            raise fail(f"cell {cell.name}: too many tags (at most {MAX_TAGS}, with one per factor)", "factors")
        for tag in tags:
            if len(tag) > MAX_TAG:
                raise fail(f"cell {cell.name}: tag {quote(tag)} is longer than {MAX_TAG} characters: "
                           "use shorter factor and level names", "factors")
    return campaign


#: The tags the campaign gives each run (besides one per factor): a user tag cannot forge them.
OWN_TAGS = ("campaign", "cell", "repeat", "plan")


def _check_user_tags(options: Mapping[str, OptionValue], where: tuple[str, ...],
                     factors: list[tuple[str, tuple[str, ...]]], fail: Callable[..., ConfigError]) -> None:
    """A `tag` option may not start with a key the campaign tags its runs with (it adopts runs by them)."""
    value = options.get("tag", [])
    own = (*OWN_TAGS, *(f for f, _ in factors))
    for tag in value if isinstance(value, list) else [str(value)]:
        key, sep, _ = tag.partition("=")
        if sep and key in own:
            raise fail(f"{'.'.join(where)}: tag {quote(tag)}: {key}= is the campaign's own tag of every run",
                       *where, "tag")


def _line(lines: dict[str, int], where: tuple[str, ...]) -> int:
    for n in range(len(where), 0, -1):
        line = lines.get(".".join(where[:n]))
        if line:
            return line
    return 1


def _typed(doc: Mapping[str, Any], key: str, kind: type, default: Any, fail: Callable[..., ConfigError]) -> Any:
    value = doc.get(key, default)
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise fail(f"`{key}` must be {'an integer' if kind is int else 'a string'}", key)
    return value


def _options(doc: Any, where: str, fail: Callable[..., ConfigError]) -> dict[str, OptionValue]:
    """Run options by name (`count = 2000`, `stream-log = true`, `stress = ["net:udp,streams=3"]`), normalised."""
    parts = where.split(".")
    if not isinstance(doc, dict):
        raise fail(f"{where} must be a table of `latscope run` options (OPTION = VALUE)", *parts)
    out: dict[str, OptionValue] = {}
    for key, value in doc.items():
        opt = key.replace("_", "-")
        if opt.startswith("-"):
            raise fail(f"{where}: write option names without dashes: {opt.lstrip('-')} = ...", *parts, key)
        if not _OPTION.match(opt):
            # `"name=evil" = true` would be `--name=evil`: past the reserved names, into the run's own options.
            raise fail(f"{where}: {quote(key)} is not an option name (letters, digits and '-', as in stream-log)",
                       *parts, key)
        if opt in RESERVED:
            raise fail(f"{where}: `{key}` cannot be set in a campaign ({RESERVED[opt]})", *parts, key)
        if isinstance(value, list):
            if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
                raise fail(f"{where}.{key}: a list holds strings or numbers", *parts, key)
            out[opt] = [str(v) for v in value]
        elif isinstance(value, (str, int, float, bool)):
            if isinstance(value, str):
                check_label(value, f"{where}.{key}", 4096)
            out[opt] = value
        else:
            raise fail(f"{where}.{key}: a value is a string, number, boolean or list", *parts, key)
    return out


def argv(options: Mapping[str, OptionValue]) -> list[str]:
    """The `latscope run` arguments for ``options`` (true flags given, false ones left out, lists repeated)."""
    out: list[str] = []
    for opt, value in options.items():
        if value is True:
            out.append(f"--{opt}")
        elif value is False:
            continue
        elif isinstance(value, list):
            for v in value:
                out += [f"--{opt}", v]
        else:
            out += [f"--{opt}", str(value)]
    return out


def expected_seconds(options: Mapping[str, OptionValue]) -> float:
    """How long a run with ``options`` takes: its stream, plus the set-up a run of its topology needs."""
    try:
        period = parse_duration_ns(str(options.get("period", "1ms"))) / 1e9
        if "duration" in options:
            stream = parse_duration_ns(str(options["duration"])) / 1e9
        else:
            stream = int(str(options.get("count", 60_000))) * period
    except (ConfigError, ValueError):
        stream = 60.0
    topo = str(options.get("topology", ""))
    return stream + OVERHEAD_S["vm" if topo.startswith("vm") else "other"]


def key_lines(text: str) -> dict[str, int]:
    """Where each table and key of a TOML text is, as dotted paths ("factors.stress.udp3.stress" -> line).

    Good enough for error messages: tables ([a.b]), keys (k = ...), and the
    keys of inline tables on the same line (a = { b = { c = 1 } }).
    """
    lines: dict[str, int] = {}
    table: list[str] = []
    for n, line in enumerate(text.splitlines(), start=1):
        stripped = line.split("#", 1)[0].strip() if '"' not in line else line.strip()
        header = re.match(r"^\[\s*([^\[\]]+?)\s*\]$", stripped)
        if header:
            table = [p.strip().strip('"') for p in header.group(1).split(".")]
            lines.setdefault(".".join(table), n)
            continue
        for path in _inline_paths(stripped):
            lines.setdefault(".".join(table + path), n)
    return lines


def _inline_paths(line: str) -> Iterator[list[str]]:
    """Dotted key paths written on one line: `a = { b = { c = 1 }, d = 2 }` gives a, a.b, a.b.c, a.d."""
    stack: list[list[str]] = []
    key: str | None = None
    last: str | None = None
    expect_key = True
    brackets = 0
    for tok in re.finditer(r'"[^"]*"|[A-Za-z0-9_.-]+|[{}=,\[\]]', line):
        t = tok.group(0)
        if t in "[]":
            brackets += 1 if t == "[" else -1
        elif brackets > 0:
            continue
        elif t == "=":
            if key is not None:
                yield [*(p for part in stack for p in part), *key.split(".")]
                last = key
            key, expect_key = None, False
        elif t == "{":
            if last is not None:
                stack.append(last.split("."))
            last, expect_key = None, True
        elif t == "}":
            if stack:
                stack.pop()
            expect_key = False
        elif t == ",":
            expect_key = True
        elif expect_key:
            key, expect_key = t.strip('"'), False


def describe_cells(campaign: Campaign) -> list[dict[str, Any]]:
    """The cells as documents (plan --json, status, report)."""
    return [{"cell": c.name, "levels": dict(c.levels), "options": c.options, "argv": argv(c.options),
             "baseline": all(campaign.baseline[f] == lv for f, lv in c.levels)} for c in campaign.cells]
