"""The environment document follows its declared schema: no key is written that the schema does not declare."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from latscope.analysis.envdiff import CONFIG, differences, flatten
from latscope.env.schema import COLLECTED, COMPARED, RUN, VOLATILE, rule_of, undeclared

DOCS = Path(__file__).resolve().parents[3] / "docs" / "format.md"


def test_collected_environment_is_all_declared() -> None:
    """Every key collect_environment() writes on this machine is in COLLECTED (compared or volatile)."""
    from latscope.env.collect import collect_environment

    flat = flatten(collect_environment())
    assert len(flat) > 30  # the collectors ran: kernel, cpu, interfaces, tracing, ...
    assert undeclared(set(flat)) == []


def test_an_undeclared_key_is_found() -> None:
    """The check above can fail: a key a collector would add without declaring it is reported."""
    flat = flatten({"kernel": {"release": "6.1", "new_fact": 1}, "net": {"interfaces": [{"name": "eth0",
                    "mtu": 1500, "ifindex": 2}]}})
    assert undeclared(set(flat)) == ["kernel.new_fact", "net.interfaces[eth0].ifindex"]


@pytest.mark.parametrize(("key", "rule"), [
    ("before.kernel.release", COMPARED),
    ("before.kernel.cmdline_params.processor.max_cstate", COMPARED),
    ("guest.net.interfaces[eth0.100].address", VOLATILE),
    ("before.net.interfaces[lo].timestamping.phc_index", COMPARED),
    ("before.time.captured_at", VOLATILE),
    ("workers.sender.pid", VOLATILE),
    ("workers.receiver.affinity", COMPARED),
    ("topology.namespaces", VOLATILE),
    ("before.kernel", None),
    ("irtt.version", None),
])
def test_rules_of_keys(key: str, rule: str | None) -> None:
    """Patterns: * is one component, ** the rest (dots included), [*] any item name; others are undeclared."""
    assert rule_of(key, RUN) == rule


def test_differences_follow_the_schema() -> None:
    """Volatile keys are left out, compared and undeclared ones listed, in config as in the environment."""
    a = {"config": {"period_ns": 1_000_000, "sender": {"run_id": "x", "period_ns": 1}},
         "environment": {"before": {"net": {"interfaces": [{"name": "veth0", "address": "aa", "mtu": 1500}]},
                                    "latscope": {"git_commit": "1"}}, "irtt": {"version": "0.9"}}}
    b = {"config": {"period_ns": 1_000_000, "sender": {"run_id": "y", "period_ns": 2}},
         "environment": {"before": {"net": {"interfaces": [{"name": "veth0", "address": "bb", "mtu": 9000}]},
                                    "latscope": {"git_commit": "2"}}, "irtt": {"version": "0.9.1"}}}
    assert [d.key for d in differences([a, b])] == [
        "config.sender.period_ns", "environment.before.net.interfaces[veth0].mtu", "environment.irtt.version"]


def test_docs_list_the_schema() -> None:
    """docs/format.md's "Environment keys" tables hold exactly the declared keys and their rules."""
    text = DOCS.read_text().split("## Environment keys", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, dict[str, str]] = {"collected": {}, "run": {}, "config": {}}
    current = None
    for line in text.splitlines():
        heading = re.match(r"### .*\((collected|run|config)\)", line)
        if heading:
            current = heading.group(1)
            continue
        m = re.match(r"\| `([^`]+)` \| (compared|volatile) \|", line)
        if m and current:
            tables[current][m.group(1)] = m.group(2)
    assert tables["collected"] == COLLECTED
    assert tables["run"] == {k: v for k, v in RUN.items() if not k.startswith(("before.", "guest."))}
    assert tables["config"] == CONFIG
