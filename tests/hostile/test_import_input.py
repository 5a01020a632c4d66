"""Import files that are not what they claim: recognised from their first bytes, refused in one short line.

Memory is capped (RLIMIT_AS) so that reading a file whole shows up as a
failure rather than as a slow test; the store stays empty.
"""

from __future__ import annotations

import gzip
import os
import resource
from pathlib import Path

import pytest

from tests.hostile.conftest import one_line_error

pytestmark = pytest.mark.hostile
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "import"
GIB = 1 << 30
#: latscope with numpy, pyarrow and duckdb loaded maps well under this; reading 1 GiB whole would not fit beside it.
MEMORY_LIMIT = 2 * GIB


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _import(latscope, kind: str, path: Path):
    return latscope("import", kind, str(path), "--name", "x", timeout=120, preexec_fn=_limited)


@pytest.fixture
def sparse_gib(tmp_path: Path) -> Path:
    """A 1 GiB file of zeros that takes no disk space."""
    p = tmp_path / "sparse.csv"
    with open(p, "wb") as fh:
        fh.truncate(GIB)
    return p


@pytest.mark.parametrize("kind", ["csv", "irtt", "sockperf", "isochron"])
def test_sparse_gigabyte(latscope, results: Path, sparse_gib: Path, kind: str) -> None:
    """A 1 GiB file of NUL bytes is refused from its first bytes: one short line, exit 2, nothing stored."""
    r = _import(latscope, kind, sparse_gib)
    assert r.returncode == 2, r.stderr[-2000:]
    line = one_line_error(r)
    assert len(line) < 300 and "\x00" not in line and "\\x00" not in line
    assert list(results.iterdir()) == []


def test_gzip_bomb(latscope, results: Path, tmp_path: Path) -> None:
    """1 GiB of zeros in a 1 MB gzip file: refused after the first 64 KiB of output."""
    p = tmp_path / "bomb.csv.gz"
    # gzip members may follow each other: one member of 16 MiB of zeros, 64 times.
    member = gzip.compress(b"\0" * (16 << 20), compresslevel=1)
    p.write_bytes(member * 64)
    r = _import(latscope, "csv", p)
    assert r.returncode == 2 and "binary" in one_line_error(r)
    assert list(results.iterdir()) == []


@pytest.mark.parametrize(("content", "needle"), [
    (b"seq,send_ns,rx_ns\n0,1,2\n" + b"9" * (20 << 20), "malformed CSV"),
    (b"seq,send_ns,rx_ns\n0,1,2\n1," + b"7" * (5 << 20) + b",3\n", "column"),
    (b"seq,send_ns," + b"A" * (200 << 10) + b"\n0,1,2\n", "header"),
    (b"seq,send_ns,rx_ns," + b"B" * 5000 + b"\n0,1,2,3\n", "unknown column"),
])
def test_huge_lines_are_not_printed(latscope, results: Path, tmp_path: Path, content: bytes, needle: str) -> None:
    """A megabyte-long row, cell or header name never ends up whole in the error line."""
    p = tmp_path / "long.csv"
    p.write_bytes(content)
    r = _import(latscope, "csv", p)
    assert r.returncode == 2, r.stderr[-2000:]
    line = one_line_error(r)
    assert needle in line and len(line) < 600
    assert list(results.iterdir()) == []


@pytest.mark.parametrize(("content", "needle"), [
    (b"[" * 100_000 + b"]" * 100_000, "not irtt JSON"),
    (b'{"round_trips": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
])
def test_deep_json(latscope, results: Path, tmp_path: Path, content: bytes, needle: str) -> None:
    """A 100,000-deep JSON array as irtt output is one line, not a RecursionError."""
    p = tmp_path / "deep.json"
    p.write_bytes(content)
    r = _import(latscope, "irtt", p)
    assert r.returncode == 2 and needle in one_line_error(r)


def test_fifo_and_device_are_refused(latscope, results: Path, tmp_path: Path) -> None:
    """A FIFO or /dev/zero as the import file is refused at once instead of read forever."""
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)
    r = _import(latscope, "csv", fifo)
    assert r.returncode == 2 and "FIFO" in one_line_error(r)
    r = _import(latscope, "irtt", Path("/dev/zero"))
    assert r.returncode == 2 and "character device" in one_line_error(r)
    assert list(results.iterdir()) == []


def test_absurd_values_are_not_stored(latscope, results: Path, tmp_path: Path) -> None:
    """An irtt interval of 3.6e35 ns is refused (exit 2) instead of stored to break every later `sql`; a CSV
    whose schedule steps by ten days is imported without a period."""
    import json

    doc = json.loads((FIXTURES / "irtt-veth-loss.json").read_text())
    doc["config"]["params"]["interval"] = 359999999999999999999996400000000000
    p = tmp_path / "absurd.json"
    p.write_text(json.dumps(doc))
    r = _import(latscope, "irtt", p)
    assert r.returncode == 2 and "interval" in one_line_error(r)
    assert list(results.iterdir()) == []
    days = 10 * 86_400 * 10**9
    csv = tmp_path / "slow.csv"
    csv.write_text("seq,sched_ns,send_ns,rx_ns\n" + "".join(f"{i},{i * days},{i * days + 5},{i * days + 900}\n"
                                                          for i in range(5)))
    r = _import(latscope, "csv", csv)
    assert r.returncode == 0, r.stderr
    r = latscope("sql", "SELECT period_ns FROM runs", "--csv")
    assert r.returncode == 0 and r.stdout.split() == ["period_ns", '""']
