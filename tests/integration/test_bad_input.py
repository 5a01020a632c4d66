"""Bad input: one clear line on stderr, the right exit code, nothing half-done left behind."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN
from tests.integration.netutil import namespaces_of


def _one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("latscope: error: "), lines[0]
    assert "Traceback" not in r.stderr
    return lines[0]


@pytest.mark.parametrize(("args", "needle"), [
    (["--period", "0"], "period"),
    (["--period", "abc"], "period"),
    (["--count", "0"], "count"),
    (["--size", "10"], "size"),
    (["--l2", "--size", "9000"], "Ethernet"),
    (["--vid", "5"], "--l2"),
    (["--l2", "--vid", "5000"], "vid"),
    (["--l2", "--pcp", "9"], "pcp"),
    (["--cpu-send", "999"], "cpu-send"),
    (["--prio-recv", "100"], "prio-recv"),
    (["--spin", "2ms"], "spin"),
    (["--count", "5", "--duration", "5s"], "not both"),
    (["--topology", "none"], "--dest"),
    (["--topology", "mesh"], "topology"),
    (["--base-time", "1000"], "past"),
    (["--ipv6", "--l2"], "exclude"),
    (["--ethertype", "0x10"], "ethertype"),
])
def test_invalid_options_exit_2(latscope, results: Path, args: list[str], needle: str) -> None:
    """Each invalid value or combination is a one-line usage error with exit 2, before anything runs."""
    r = latscope("run", "--topology", "loopback", *args) if "--topology" not in args else latscope("run", *args)
    assert r.returncode == 2, r.stderr
    assert needle in _one_line_error(r)
    assert list(results.iterdir()) == []


def test_unknown_run_is_exit_2(latscope) -> None:
    """show with an unknown run id says so in one line, exit 2."""
    r = latscope("show", "20990101-000000-abcdef")
    assert r.returncode == 2 and "no run" in _one_line_error(r)


@pytest.mark.root
def test_txtime_without_etf_is_a_clear_error(latscope) -> None:
    """--txtime on a kernel without the ETF qdisc explains why it cannot work (this kernel has none)."""
    r = latscope("run", "--count", "10", "--txtime", "200us")
    assert r.returncode == 2
    assert "ETF" in _one_line_error(r)


@pytest.mark.slow
@pytest.mark.root
def test_not_root_veth_names_loopback(tmp_path: Path) -> None:
    """Without root's privileges, --topology veth names --topology loopback; loopback still works."""
    # Drop every capability (uid 0 without capabilities cannot create
    # namespaces); a plain uid switch would also lose access to this machine's
    # Python, which lives under /root.
    drop = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"]
    env = {**os.environ, "LATSCOPE_RESULTS": str(tmp_path / "r")}
    r = subprocess.run([*drop, str(BIN / "latscope"), "run", "--topology", "veth", "--count", "10"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2
    assert "--topology loopback" in _one_line_error(r)
    ok = subprocess.run([*drop, str(BIN / "latscope"), "run", "--count", "200", "--period", "500us", "--json"],
                        capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["config"]["topology"] == "loopback" and doc["packets"]["received"] == 200
    assert doc["environment"]["workers"]["sender"]["mlock"] is False


@pytest.mark.root
@pytest.mark.parametrize("verb", [["run", "--topology", "loopback", "--count", "10"], ["run", "--count", "10"],
                                  ["send", "--iface", "lo", "--dest", "02:00:00:00:00:01", "--count", "10"],
                                  ["recv", "--iface", "lo"]])
def test_l2_without_cap_net_raw_is_refused_up_front(tmp_path: Path, verb: list[str]) -> None:
    """--l2 without CAP_NET_RAW: exit 2 and one line naming the capability, before any namespace or worker."""
    env = {**os.environ, "LATSCOPE_RESULTS": str(tmp_path / "r")}
    # setpriv execs latscope: the pid is latscope's, which its namespace names carry
    proc = subprocess.Popen(["setpriv", "--bounding-set=-net_raw", "--", str(BIN / "latscope"), *verb, "--l2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert r.returncode == 2, r.stderr
    assert "CAP_NET_RAW" in _one_line_error(r)
    # refused before the store, the namespaces or a worker: nothing was made, not even a staging directory
    assert not (tmp_path / "r").exists() or list((tmp_path / "r").iterdir()) == []
    assert namespaces_of(proc.pid) == []


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """Mount a tmpfs of the given options under tmp_path; unmounted afterwards."""
    mounts: list[Path] = []

    def mount(opts: str) -> Path:
        target = tmp_path / f"mnt{len(mounts)}"
        target.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(target)], check=True)
        mounts.append(target)
        return target

    yield mount
    for m in mounts:
        subprocess.run(["umount", "-l", str(m)], check=False)


@pytest.mark.root
def test_read_only_results_root(latscope, small_tmpfs) -> None:
    """A results root that cannot be written is detected before the run starts (exit 1, one line)."""
    ro = small_tmpfs("ro,size=1m")
    r = latscope("run", "--count", "100", "--results", str(ro), use_results=False)
    assert r.returncode == 1
    assert "not writable" in _one_line_error(r)


@pytest.mark.root
def test_full_disk_detected_before_run(latscope, small_tmpfs) -> None:
    """A results root without room for the run is refused up front; the store stays empty."""
    tiny = small_tmpfs("size=64k")
    r = latscope("run", "--count", "60000", "--results", str(tiny), use_results=False)
    assert r.returncode == 1
    assert "free" in _one_line_error(r)
    assert [p.name for p in tiny.iterdir()] == []
