"""Every option a verb's --help lists is documented on the verb's page (docs/VERB.md), so neither drifts alone."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import click
import pytest

from latscope.cli.main import VERBS

DOCS = Path(__file__).resolve().parents[2] / "docs"
#: Pages a verb's options may be documented on besides its own: `send` takes every stream option of `run`
#: (send.md says so), `run` documents its VM and trace options on vm.md and breakdown.md.
ALSO = {"send": ("run.md",), "run": ("vm.md", "breakdown.md")}


def command(verb: str) -> click.Command:
    module, _, attr = VERBS[verb][0].partition(":")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("verb", list(VERBS))
def test_every_option_is_documented(verb: str) -> None:
    """Each long option of the command (and its --no- form) appears on its pages as a word of its own."""
    pages = "\n".join((DOCS / page).read_text() for page in (f"{verb}.md", *ALSO.get(verb, ())))
    cmd = command(verb)
    # A group (campaign) documents the options of its subcommands.
    params = [p for c in cmd.commands.values() for p in c.params] if isinstance(cmd, click.Group) else cmd.params
    options = sorted({o for p in params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")})
    assert options, f"{verb} has no options?"
    missing = [o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", pages)]
    assert missing == [], f"docs/{verb}.md does not mention {missing}"


def test_send_page_says_it_takes_run_options() -> None:
    """The exception above holds only as long as send.md points at run.md for them."""
    assert "every stream option of `run`" in (DOCS / "send.md").read_text()


def test_documented_statistics_are_the_computed_ones() -> None:
    """run.md, show.md and format.md list exactly the keys of a statistics object (latency_us, ...)."""
    import numpy as np

    from latscope.analysis.summary import summarise
    from latscope.store.samples import Samples
    from tests.support import synthetic_columns

    stats = summarise(Samples(synthetic_columns(np.arange(1, 1001, dtype=np.int64) * 1000)),
                      {"sent": 1000, "received": 1000})["latency_us"]
    for page in ("run.md", "show.md", "format.md"):
        text = (DOCS / page).read_text()
        listed = re.search(r"p50`?,?\s+`?p90`?,\s+`?p99`?,\s+`?p999`?,\s+`?p9999`?[^.)]*", text)
        assert listed, f"{page} lists no statistics"
        named = set(re.findall(r"\b(count|min|avg|max|stddev|p\d+)\b", text[listed.start() - 60:listed.end()]))
        assert named == set(stats), f"{page}: {sorted(named ^ set(stats))}"
