"""Every verb's --json document names its format and schema version, as docs/format.md lists them.

The documents come from real runs in a private results root: a measured loopback run (traced when tracefs
allows), a send/recv pair over loopback, an import; the reading verbs then run on those.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest

from latscope.cli.common import JSON_DOCUMENTS
from latscope.cli.main import VERBS
from tests.conftest import BIN

DOCS = Path(__file__).resolve().parents[2] / "docs" / "format.md"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def documented() -> dict[str, dict[str, Any]]:
    """The table of docs/format.md's "JSON output" section: verb -> format, version, top-level keys."""
    text = DOCS.read_text()
    section = text.split("## JSON output", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, dict[str, Any]] = {}
    by_format: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        keys = set(re.findall(r"`([a-z_0-9]+)`", cells[3]))
        for other in re.findall(r"`(latscope-[a-z-]+)`", cells[3]):  # "the keys of `latscope-...`"
            keys |= by_format[other]
        by_format[cells[1].strip("`")] = keys
        for verb in re.findall(r"`([a-z]+(?: [a-z]+)?)`", cells[0]):
            rows[verb] = {"format": cells[1].strip("`"), "schema_version": int(cells[2]), "keys": keys}
    return rows


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Documents:
    """Each verb's --json output, made on first use from runs stored under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache: dict[str, dict[str, Any]] = {}
        self.sent = ""

    def cli(self, *args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([str(BIN / "latscope"), *args, "--results", str(self.root)], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode in ok, f"latscope {' '.join(args)}: {out.stderr}"
        return out

    def json(self, key: str, make: Callable[[], str]) -> dict[str, Any]:
        if key not in self.cache:
            self.cache[key] = json.loads(make())
        return self.cache[key]

    def get(self, verb: str) -> dict[str, Any]:
        makers: dict[str, Callable[[], str]] = {
            "run": lambda: self.cli("run", "--topology", "loopback", "--count", "300", "--period", "500us",
                                    "--name", "plain", "-q", "--json").stdout,
            "recv": self.recv,
            "send": self.send,
            "import": lambda: self.cli("import", "irtt", str(FIXTURES / "import" / "irtt-lo-midpoint.json"),
                                       "--name", "imported", "--json").stdout,
            "show": lambda: self.cli("show", self.get("run")["run_id"], "--histogram", "--window", "--json").stdout,
            "ls": lambda: self.cli("ls", "--json").stdout,
            "compare": lambda: self.cli("compare", self.get("run")["run_id"], self.get("recv")["run_id"],
                                        "--bootstrap", "200", "--json").stdout,
            "check": lambda: self.cli("check", self.get("run")["run_id"], "--max", "loss=0", "--json",
                                      ok=(0, 1)).stdout,
            "sql": lambda: self.cli("sql", "SELECT run_id, count(*) AS n FROM samples GROUP BY run_id",
                                    "--json").stdout,
            "doctor": lambda: self.cli("doctor", "--json", ok=(0, 1)).stdout,
            "breakdown": lambda: self.cli("breakdown", self.traced(), "--json").stdout,
            "campaign plan": lambda: self.cli("campaign", "plan", self.campaign(), "--json").stdout,
            "campaign status": lambda: self.cli("campaign", "status", self.campaign(made=True), "--json").stdout,
            "campaign report": lambda: self.cli("campaign", "report", self.campaign(made=True), "--json",
                                                "--bootstrap", "100").stdout,
        }
        return self.json(verb, makers[verb])

    def campaign(self, made: bool = False) -> str:
        """A two-cell campaign on loopback (made once when ``made``)."""
        path = self.root.parent / "json-docs.toml"
        if not path.exists():
            path.write_text('name = "docs"\n[base]\ntopology = "loopback"\ncount = 200\nperiod = "500us"\n'
                            '[factors]\nsize = { small = {}, big = { size = 500 } }\n')
        if made and "campaign-made" not in self.cache:
            self.cli("campaign", "run", str(path))
            self.cache["campaign-made"] = {}
        return str(path)

    def traced(self) -> str:
        out = self.cli("run", "--topology", "loopback", "--count", "300", "--period", "500us", "--trace",
                       "--name", "traced", "-q", "--json")
        return str(json.loads(out.stdout)["run_id"])

    def send(self) -> str:
        self.get("recv")  # the pair runs together; the sender's document is kept with the receiver's
        return self.sent

    def recv(self) -> str:
        port = free_udp_port()
        recv = subprocess.Popen([str(BIN / "latscope"), "recv", "--bind", "127.0.0.1", "--port", str(port),
                                 "--idle-timeout", "2s", "--timeout", "30s", "--json", "--results", str(self.root)],
                                text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert recv.stderr is not None
            line = recv.stderr.readline()  # "latscope: listening on ..." once the socket is bound
            assert "listening" in line, line
            send = subprocess.run([str(BIN / "latscope"), "send", "--dest", f"127.0.0.1:{port}", "--count", "300",
                                   "--period", "500us", "-q", "--json"], capture_output=True, text=True, timeout=60)
            assert send.returncode == 0, send.stderr
            self.sent = send.stdout
            out, err = recv.communicate(timeout=30)
        finally:
            if recv.poll() is None:
                recv.kill()
                recv.wait()
        assert recv.returncode == 0, err
        return out


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> Documents:
    return Documents(tmp_path_factory.mktemp("results"))


JSON_VERBS = [pytest.param(v, marks=pytest.mark.tracefs) if v == "breakdown" else v for v in JSON_DOCUMENTS]


@pytest.mark.slow
@pytest.mark.parametrize("verb", JSON_VERBS)
def test_json_document_names_its_format(documents: Documents, verb: str) -> None:
    """format and schema_version come first, as declared and documented; every top-level key is documented."""
    doc = documents.get(verb)
    fmt, version = JSON_DOCUMENTS[verb]
    assert list(doc)[:2] == ["format", "schema_version"]
    assert (doc["format"], doc["schema_version"]) == (fmt, version)
    row = documented()[verb]
    assert (row["format"], row["schema_version"]) == (fmt, version)
    assert set(doc) <= row["keys"], f"undocumented top-level keys of {verb} --json: {set(doc) - row['keys']}"


def test_every_verb_with_json_is_declared_and_documented() -> None:
    """A verb that has --json is in JSON_DOCUMENTS and docs/format.md; a declared verb has --json."""
    import importlib

    with_json = set()
    for verb, (target, _) in VERBS.items():
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        subs = command.commands if isinstance(command, click.Group) else {"": command}
        for name, sub_command in subs.items():
            if any("--json" in p.opts for p in sub_command.params):
                with_json.add(f"{verb} {name}".strip())
    assert with_json == set(JSON_DOCUMENTS)
    assert set(documented()) == set(JSON_DOCUMENTS)


def test_breakdown_declares_what_its_document_says() -> None:
    """breakdown's document stamps its own format (trace.report): the same as the declared one."""
    from latscope.trace.report import BREAKDOWN_FORMAT, BREAKDOWN_SCHEMA_VERSION

    assert JSON_DOCUMENTS["breakdown"] == (BREAKDOWN_FORMAT, BREAKDOWN_SCHEMA_VERSION)
