"""`latscope run --stress` and `--log-dir/--log-fs` with the real tools and real mounts.

Each case checks what the tools themselves reported (stored in run.json),
and that nothing the run started is left: no iperf3/fio/stress-ng process
(nor a stress-ng worker), no mount, no loop device, no scratch directory.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from latscope.experiment.procs import children_of
from latscope.store.layout import ResultsStore
from tests.conftest import BIN
from tests.integration.netutil import namespaces_of
from tests.integration.runwatch import wait_for_packets

pytestmark = [pytest.mark.root, pytest.mark.slow]
TOOLS = {"iperf3", "fio", "stress-ng"}


def comm(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
        return None
    return stat[stat.index("(") + 1:stat.rindex(")")]


def tools_of(pid: int) -> set[int]:
    """Load processes started by ``pid``: its children named like a tool, and theirs (stress-ng workers)."""
    found: set[int] = set()
    frontier = {pid}
    for _ in range(3):
        nxt = {child for parent in frontier for child in children_of(parent)}
        frontier = {p for p in nxt if (comm(p) or "").split("-")[0] in {"iperf3", "fio", "stress"}}
        found |= frontier
    return found


def mounts_of(pid: int) -> list[str]:
    """Mounts and loop devices of process ``pid``'s log file systems (by the names latscope gives them)."""
    loops = []
    for dev in Path("/sys/block").glob("loop*"):
        try:
            backing = (dev / "loop" / "backing_file").read_text()
        except OSError:
            continue
        if f"latscope-logfs-{pid}-" in backing:
            loops.append(f"/dev/{dev.name}")
    out = [f"loop {d}" for d in loops]
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        source = line.split(" - ")[-1].split()[1]
        if source == f"latscope-{pid}-logs" or source in loops or f"latscope-logfs-{pid}-" in line.split()[4]:
            out.append(line)
    return out


def scratch_of(pid: int) -> list[str]:
    return [p.name for p in Path("/tmp").glob(f"latscope-logfs-{pid}-*")]


def assert_nothing_left(pid: int, tool_pids: set[int], wait_s: float = 5.0) -> None:
    deadline = time.monotonic() + wait_s
    # Polled, not read once: another test's run may be reaping this pid's leftovers at this moment.
    while time.monotonic() < deadline and (any(comm(p) for p in tool_pids) or tools_of(pid) or mounts_of(pid)
                                           or scratch_of(pid) or namespaces_of(pid)):
        time.sleep(0.05)
    assert [p for p in tool_pids if comm(p)] == []
    assert mounts_of(pid) == [] and scratch_of(pid) == [] and namespaces_of(pid) == []


def only_run(results: Path):
    runs, bad = ResultsStore(results).runs()
    assert bad == [] and len(runs) == 1
    return runs[0]


def run_doc(results: Path) -> dict:
    return json.loads((only_run(results).path / "run.json").read_text())


def achieved_positive(entry: dict) -> None:
    a = entry["achieved"]
    key = {"net": "sent_bits_per_second", "io": "iops", "cpu": "bogo_ops_per_second",
           "vm": "bogo_ops_per_second"}[entry["kind"]]
    assert a[key] > 0, a
    if entry["kind"] == "net":
        assert a["received_bytes"] > 0
        assert a["sent_packets"] > 0 if entry["options"]["protocol"] == "udp" else a["retransmits"] is not None
    if entry["kind"] == "io":
        assert a["fsyncs"] > 0


def start(results: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "latscope"), "run", "--quiet", *args], text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            env={**os.environ, "LATSCOPE_RESULTS": str(results), **(env or {})})


@pytest.mark.parametrize("spec", ["net:udp,streams=3", "net:tcp,rate=50M", "io:dir={tmp}", "cpu:workers=2,cpus=0-1",
                                  "vm:bytes=32M"])
def test_each_kind_runs_and_is_recorded(tmp_path: Path, results: Path, spec: str) -> None:
    """The tool ran during the run and achieved something; run.json has it; nothing is left afterwards."""
    spec = spec.format(tmp=tmp_path)
    proc = start(results, "--topology", "veth", "--count", "2000", "--stress", spec)
    wait_for_packets(results, proc, 100)
    running = tools_of(proc.pid)
    assert running, "no load process while the run measures"
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    doc = run_doc(results)
    (entry,) = doc["stress"]
    assert entry["spec"] == spec and doc["config"]["stress"] == [spec]
    assert entry["tool"] in TOOLS and entry["started"] and entry["ended"] and entry["argv"][0][0] == entry["tool"]
    assert {p["pid"] for p in entry["processes"]} <= running  # what was recorded is what ran
    assert all(p["ended_by"] in ("latscope", "itself") for p in entry["processes"])
    achieved_positive(entry)
    if spec.startswith("net"):
        assert len(entry["processes"]) == 2 * entry["options"]["streams"]
    if spec.startswith("io"):
        assert list(tmp_path.glob("latscope-*-io*.dat")) == []  # fio's file is removed
    assert_nothing_left(proc.pid, running)


def test_io_writes_into_the_log_fs_and_loads_stack(results: Path) -> None:
    """io without dir= writes where the logs go (an ext4 --log-fs); several loads run in one capture."""
    proc = start(results, "--topology", "veth", "--count", "2000", "--stream-log", "--log-fs", "ext4",
                 "--stress", "io", "--stress", "cpu")
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    doc = run_doc(results)
    assert [e["kind"] for e in doc["stress"]] == ["io", "cpu"]
    io = doc["stress"][0]
    assert io["processes"][0]["file"].startswith(doc["log"]["dir"] + "/")
    for entry in doc["stress"]:
        achieved_positive(entry)
    assert_nothing_left(proc.pid, set())


def test_ctrl_c_stops_the_loads_and_keeps_the_run(results: Path) -> None:
    """SIGINT mid-run: the loads end, their figures and the interrupted run are stored, nothing is left."""
    proc = start(results, "--topology", "veth", "--count", "30000", "--stream-log", "--log-fs", "ext2",
                 "--stress", "net:udp,streams=2", "--stress", "io", "--stress", "cpu")
    wait_for_packets(results, proc, 300)
    running = tools_of(proc.pid)
    assert len({comm(p) for p in running} & TOOLS) == 3, running
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "run interrupted (stopped by SIGINT)" in err
    run = only_run(results)
    assert run.record.status == "interrupted"
    doc = run_doc(results)
    assert [e["kind"] for e in doc["stress"]] == ["net", "io", "cpu"]
    for entry in doc["stress"]:
        achieved_positive(entry)
    received = doc["summary"]["packets"]["received"]
    for role in ("sender", "receiver"):
        lines = (run.path / f"stream-{role}.log").read_text().splitlines()
        assert len(lines) >= received - 2
    assert_nothing_left(proc.pid, running)


def test_sigkill_loads_die_and_the_next_run_reaps(results: Path, tmp_path: Path) -> None:
    """SIGKILL: the loads end with latscope (parent-death signal); its ext4 mount and loop go with the next run."""
    proc = start(results, "--topology", "veth", "--count", "30000", "--stream-log", "--log-fs", "ext4",
                 "--stress", "net", "--stress", "io", "--stress", "vm:bytes=16M")
    wait_for_packets(results, proc, 300)
    running = tools_of(proc.pid)
    assert len({comm(p) for p in running} & TOOLS) == 3, running
    assert mounts_of(proc.pid)
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while any(comm(p) for p in running) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in running if comm(p)] == [], "loads outlived a SIGKILLed latscope"
    # The mount was there before the kill (checked above). It is not checked again here: any other test's
    # run that starts in the meantime reaps the leftovers of dead latscope runs, so it may be gone already.
    nxt = start(results, "--topology", "loopback", "--count", "200")
    _out, err = nxt.communicate(timeout=120)
    assert nxt.returncode == 0, err
    # It removes the killed run's staging directory in this store; the mount and its loop device too, unless
    # a run of another test on this machine (the suite runs several at once) got to them first.
    assert "removed what killed latscope runs left behind" in err
    assert re.search(rf"\.staging-\S*-{proc.pid}\b", err), err
    assert_nothing_left(proc.pid, running)


@pytest.mark.parametrize("fs", ["tmpfs", "ext2", "ext4"])
def test_log_fs_keeps_every_line_and_unmounts(results: Path, fs: str) -> None:
    """The stream logs are written on the file system made for the run, then land in the run directory."""
    proc = start(results, "--topology", "veth", "--count", "2000", "--stream-log", "--log-fs", fs)
    wait_for_packets(results, proc, 100)
    (mounted,) = [line for line in mounts_of(proc.pid) if f" - {fs} " in line]
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    run = only_run(results)
    for role in ("sender", "receiver"):
        lines = (run.path / f"stream-{role}.log").read_text().splitlines()
        assert len(lines) == 2000 and {len(ln.split()) for ln in lines} and lines[0].split()[0] == "0"
    doc = run_doc(results)
    assert doc["config"]["log"] == {"dir": None, "fs": fs}
    assert doc["log"]["fstype"] == fs and doc["log"]["log_bytes"] > 0 and mounted
    if fs != "tmpfs":
        assert doc["log"]["device"].startswith("/dev/loop") and doc["log"]["backing_file"].endswith(f"{fs}.img")
    assert_nothing_left(proc.pid, set())


def test_log_dir_and_log_fs_on_it(results: Path, tmp_path: Path) -> None:
    """--log-dir alone writes there and moves the logs into the run; with --log-fs it is the mount point."""
    logs = tmp_path / "logs"
    logs.mkdir()
    proc = start(results, "--topology", "loopback", "--count", "300", "--stream-log", "--log-dir", str(logs))
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    run = only_run(results)
    assert len((run.path / "stream-receiver.log").read_text().splitlines()) == 300
    assert list(logs.iterdir()) == []
    assert run_doc(results)["config"]["log"] == {"dir": str(logs), "fs": None}
    res2 = tmp_path / "r2"
    res2.mkdir()
    proc = start(res2, "--topology", "veth", "--count", "300", "--stream-log", "--log-dir", str(logs),
                 "--log-fs", "tmpfs")
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert run_doc(res2)["log"]["dir"] == str(logs) and not os.path.ismount(logs)
    assert_nothing_left(proc.pid, set())


def _one_line_exit2(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize(("args", "named"), [
    (["--stress", "net:streams=0"], "streams=0"),
    (["--stress", "net:bogus=1"], "bogus=1"),
    (["--stress", "disk"], "disk"),
    (["--stress", "io"], "io needs dir=PATH or --log-fs"),
    (["--stress", "net", "--topology", "none", "--dest", "198.18.0.9:5000"], "net"),
    (["--log-fs", "tmpfs"], "--stream-log"),
    (["--log-dir", "/tmp"], "--stream-log"),
    (["--stream-log", "--log-fs", "ext4", "--topology", "vm"], "--vm-cwd"),
])
def test_bad_input_is_one_line_exit_2(latscope, results: Path, args: list[str], named: str) -> None:
    """Bad specs and option combinations: one line naming what is wrong, exit 2, nothing stored or left."""
    line = _one_line_exit2(latscope("run", "--count", "200", *args))
    assert named in line
    assert ResultsStore(results).runs()[0] == []


def test_missing_tool_names_the_package(results: Path, tmp_path: Path) -> None:
    """With iperf3 not on PATH: one line naming the Debian package, exit 2, before anything is set up."""
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("ip", "tc", "ethtool", "nft", "setpriv", "nsenter", "mount", "umount", "fio", "stress-ng"):
        for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
            if os.path.exists(f"{d}/{tool}"):
                (bare / tool).symlink_to(f"{d}/{tool}")
                break
    proc = start(results, "--topology", "veth", "--count", "200", "--stress", "cpu", "--stress", "net",
                 env={"PATH": str(bare)})
    out, err = proc.communicate(timeout=60)
    line = _one_line_exit2(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    assert "iperf3" in line and "Debian package iperf3" in line
    assert namespaces_of(proc.pid) == [] and mounts_of(proc.pid) == []
    assert ResultsStore(results).runs()[0] == []
