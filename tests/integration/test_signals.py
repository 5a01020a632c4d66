"""The signal matrix of `latscope run`: SIGINT, SIGTERM and SIGKILL to the controller in every phase and
to each worker mid-run; each case checks the exit code, what was stored, and that nothing is left behind.

Workers exist only while the measurement runs, so they are signalled mid-run (and, held there, at
their very start, before their handlers are installed); the controller is signalled at boot, during the environment probe, mid-run, while the trace of a ``--trace`` run is read
and while the run is stored. A phase is reached by waiting for a real sign of it: the receiver's
progress counter in the workers' directory (mid-run), or, for phases too short to hit from outside,
the test-only hold of latscope.testhooks (``LATSCOPE_TEST_HOLD``), which makes the process wait there
until the test lets it go. After a SIGKILL of the controller the next run must remove what it left.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from latscope.store.layout import ResultsStore
from tests.conftest import BIN
from tests.integration.netutil import namespaces_of

pytestmark = pytest.mark.root

INSTANCES = Path("/sys/kernel/tracing/instances")
SHM = Path("/dev/shm")
COUNT = 3000
SHORT = ["--count", "200", "--period", "1ms"]
MID = 200  # packets received before a mid-run signal
SIGS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "KILL": signal.SIGKILL}


class Run:
    """A `latscope run` process under test, its results root and its hold directory."""

    def __init__(self, tmp: Path, args: list[str], hold: str | None = None) -> None:
        self.results = tmp / "results"
        self.results.mkdir(exist_ok=True)
        self.holds = tmp / "holds"
        self.holds.mkdir(exist_ok=True)
        env = {**os.environ, "LATSCOPE_RESULTS": str(self.results)}
        if hold:
            env["LATSCOPE_TEST_HOLD"] = f"{hold}:{self.holds}"
        self.proc = subprocess.Popen([str(BIN / "latscope"), "run", "--quiet", *args], env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.pid = self.proc.pid
        self.workers: dict[str, int] = {}
        self.out = self.err = ""

    def wait_for(self, what, timeout_s: float = 30.0, text: str = "") -> None:
        deadline = time.monotonic() + timeout_s
        while not what():
            if self.proc.poll() is not None:
                raise AssertionError(f"latscope ended before {text}: {self.proc.returncode} {self.proc.stderr.read()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"never reached: {text}")
            time.sleep(0.005)

    def reach(self, phase: str) -> None:
        self.wait_for(lambda: (self.holds / f"{phase}.reached").exists(), text=phase)

    def release(self, phase: str) -> None:
        (self.holds / f"{phase}.go").touch()

    def received(self) -> int:
        """The receiver's progress counter, read from the workers' directory (in /dev/shm, or the staging one)."""
        for work in [*SHM.glob(f"latscope-work-{self.pid}-*"), *self.results.glob(f".staging-*-{self.pid}")]:
            try:
                return struct.unpack_from("q", (work / "progress").read_bytes())[0]
            except (OSError, struct.error):
                continue
        return 0

    def find_workers(self) -> dict[str, int]:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if ppid == self.pid and b"latscope.probe.worker" in cmd:
                self.workers[cmd[cmd.index(b"latscope.probe.worker") + 1].decode()] = int(entry.name)
        return self.workers

    def mid_run(self, packets: int = MID) -> None:
        self.wait_for(lambda: self.received() >= packets, text=f"{packets} packets received")
        self.wait_for(lambda: len(self.find_workers()) == 2, text="both workers")

    def finish(self, timeout_s: float = 60.0) -> int:
        try:
            self.out, self.err = self.proc.communicate(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def runs(self):
        runs, bad = ResultsStore(self.results).runs()
        assert bad == []
        return runs


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def leftovers(run: Run) -> list[str]:
    """Everything of this run's controller that still exists."""
    out = list(namespaces_of(run.pid))
    out += [p.name for p in INSTANCES.glob(f"latscope-{run.pid}-*")] if INSTANCES.is_dir() else []
    out += [p.name for p in run.results.glob(".staging-*")] + [p.name for p in run.results.glob(".write-test-*")]
    out += [p.name for p in SHM.glob(f"latscope-work-{run.pid}-*")]
    out += [f"worker {role} {pid}" for role, pid in run.workers.items() if _alive(pid)]
    return out


def assert_clean(run: Run, wait_s: float = 3.0) -> None:
    """Nothing left (workers get ``wait_s`` to go: they end on their own when the controller dies)."""
    deadline = time.monotonic() + wait_s
    while leftovers(run) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftovers(run) == []


def next_run_cleans(run: Run, tmp: Path) -> None:
    """After a SIGKILL: the next run works and removes what the killed one left."""
    nxt = Run(tmp, SHORT)
    assert nxt.finish() == 0, nxt.err
    assert [r.record.status for r in nxt.runs()] == ["complete"]
    assert_clean(run)
    assert_clean(nxt)


def assert_stopped_before_start(run: Run, name: str) -> None:
    assert run.finish() == 1
    assert f"stopped by SIG{name} before the measurement started; nothing was stored" in run.err, run.err
    assert run.runs() == []
    assert_clean(run)


@pytest.mark.parametrize("sig", ["INT", "TERM", "KILL"])
@pytest.mark.parametrize("phase", ["boot", "probe"])
def test_controller_before_the_measurement(tmp_path: Path, phase: str, sig: str) -> None:
    """At boot or during the environment probe: a clear message, nothing stored, no namespace left."""
    run = Run(tmp_path, SHORT, hold=phase)
    run.reach(phase)
    if phase == "probe":
        assert namespaces_of(run.pid) == [f"latscope-{run.pid}-probe"]
    run.proc.send_signal(SIGS[sig])
    run.release(phase)
    if sig == "KILL":
        assert run.finish() == -signal.SIGKILL
        assert run.runs() == []
        next_run_cleans(run, tmp_path)
    else:
        assert_stopped_before_start(run, sig)


@pytest.mark.parametrize("sig", ["INT", "TERM", "KILL"])
def test_controller_mid_run(tmp_path: Path, sig: str) -> None:
    """INT/TERM store what was measured (interrupted); KILL ends both workers at once, the next run reaps."""
    run = Run(tmp_path, ["--count", str(COUNT), "--period", "1ms"])
    run.mid_run()
    run.proc.send_signal(SIGS[sig])
    if sig == "KILL":
        assert run.finish() == -signal.SIGKILL
        killed_at = time.monotonic()
        deadline = killed_at + 2.0
        while any(_alive(p) for p in run.workers.values()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(_alive(p) for p in run.workers.values()), "workers outlived their controller"
        assert run.runs() == []
        next_run_cleans(run, tmp_path)
        return
    assert run.finish() == 1, run.err
    assert f"run interrupted (stopped by SIG{sig})" in run.err
    (stored,) = run.runs()
    assert stored.record.status == "interrupted"
    pk = stored.record.summary["packets"]
    assert MID <= pk["received"] < COUNT and pk["lost"] <= 2
    assert_clean(run)


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["INT", "TERM", "KILL"])
def test_controller_while_the_trace_is_read(tmp_path: Path, sig: str) -> None:
    """INT/TERM skip the trace and store the packets (interrupted); KILL leaves the instance to the next run."""
    run = Run(tmp_path, [*SHORT, "--trace"], hold="trace-read")
    run.reach("trace-read")
    assert [p.name for p in INSTANCES.glob(f"latscope-{run.pid}-*")] == [f"latscope-{run.pid}-run"]
    run.proc.send_signal(SIGS[sig])
    run.release("trace-read")
    if sig == "KILL":
        assert run.finish() == -signal.SIGKILL
        assert run.runs() == []
        next_run_cleans(run, tmp_path)
        return
    assert run.finish() == 1, run.err
    assert f"run interrupted (stopped by SIG{sig})" in run.err
    (stored,) = run.runs()
    assert stored.record.status == "interrupted"
    assert stored.record.summary["packets"]["sent"] == 200
    assert f"stopped by SIG{sig} while the trace was read" in stored.record.extra["trace"]["error"]
    assert not (stored.path / "trace").exists()
    assert_clean(run)


@pytest.mark.parametrize("sig", ["INT", "TERM", "KILL"])
def test_controller_while_storing(tmp_path: Path, sig: str) -> None:
    """INT and TERM alike: the measurement had ended, the run is stored complete (exit 0, a note)."""
    run = Run(tmp_path, SHORT, hold="storing")
    run.reach("storing")
    run.proc.send_signal(SIGS[sig])
    run.release("storing")
    if sig == "KILL":
        assert run.finish() == -signal.SIGKILL
        assert run.runs() == []
        next_run_cleans(run, tmp_path)
        return
    assert run.finish() == 0, run.err
    assert f"SIG{sig} came while the run was being stored" in run.err
    (stored,) = run.runs()
    assert stored.record.status == "complete"
    assert stored.record.summary["packets"]["received"] == 200
    assert_clean(run)


@pytest.mark.parametrize("sig", ["INT", "TERM", "KILL"])
@pytest.mark.parametrize("role", ["sender", "receiver"])
def test_worker_mid_run(tmp_path: Path, role: str, sig: str) -> None:
    """A signalled or killed half: the other half's packets are stored, status interrupted, the half named."""
    run = Run(tmp_path, ["--count", str(COUNT), "--period", "1ms"])
    run.mid_run()
    os.kill(run.workers[role], SIGS[sig])
    assert run.finish() == 1, run.err
    how = "killed by SIGKILL" if sig == "KILL" else f"stopped by SIG{sig}"
    assert f"run interrupted (the {role} was {how})" in run.err, run.err
    (stored,) = run.runs()
    rec = stored.record
    pk, comp = rec.summary["packets"], rec.completeness
    assert rec.status == "interrupted"
    assert MID <= pk["sent"] < COUNT, "the run went on after a half had ended"
    if role == "receiver" and sig == "KILL":
        # Its receive times died with it: every packet's arrival is unknown, none counted as lost.
        assert pk["received"] == 0 and pk["lost"] == 0 and comp["unobserved"] == pk["sent"]
        assert rec.extra["capture"]["receiver"]["died"] == "killed by SIGKILL"
    else:
        assert pk["received"] >= MID
        assert pk["lost"] <= 2
        assert pk["received"] + pk["lost"] + comp.get("unobserved", 0) == pk["sent"]
    if role == "sender" and sig == "KILL":
        assert rec.extra["capture"]["sender"]["died"] == "killed by SIGKILL"
        assert "the sender was killed by SIGKILL: its own columns" in run.err
    assert_clean(run)


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["TERM", "KILL"])
@pytest.mark.parametrize("role", ["sender", "receiver"])
def test_worker_at_its_start(tmp_path: Path, role: str, sig: str) -> None:
    """A worker ended before its handlers are in place (default action): nothing measured, nothing stored."""
    run = Run(tmp_path, SHORT, hold=f"{role}-start")
    run.reach(f"{role}-start")
    run.wait_for(lambda: role in run.find_workers(), text=f"the {role} process")
    os.kill(run.workers[role], SIGS[sig])
    run.release(f"{role}-start")
    assert run.finish() == 1, run.err
    how = f"killed by SIG{sig}"
    expect = (f"the sender was {how} before its first packet; nothing was stored" if role == "sender"
              else f"the receiver ended before it was ready ({how}); nothing was stored")
    assert expect in run.err, run.err
    assert run.runs() == []
    assert_clean(run)
