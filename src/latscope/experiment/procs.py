"""Load generators as child processes that cannot outlive latscope for long.

Each tool runs in a process group of its own (so a Ctrl-C at the terminal
reaches latscope, which stops the loads in order, and the whole group, a
tool's workers included, can be killed at the end), with PR_SET_PDEATHSIG
SIGTERM (a SIGKILLed latscope takes its loads with it) and, optionally, in a
network namespace (setns through nsenter, which leaves the mount namespace alone). Its own time
limit (iperf3 -t, fio --runtime, stress-ng --timeout) is the backstop.
"""

from __future__ import annotations

import datetime as _dt
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latscope import netns as _netns
from latscope.errors import CaptureError

#: How long a tool has to end after SIGINT (writing its results) before its group is killed.
STOP_GRACE_S = 15.0


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def wrapped(argv: list[str], netns: str | None) -> list[str]:
    """``argv`` behind setpriv (the parent-death signal) and nsenter (the namespace), which then exec it.

    Both are util-linux's; doing it with preexec_fn would run Python in the
    forked child, which is not safe once latscope has threads (a progress bar).
    The death signal survives the exec of nsenter and of the tool.
    """
    out = ["setpriv", "--pdeathsig", "SIGTERM", "--"]
    if netns is not None:
        out += ["nsenter", f"--net={os.path.join(_netns.NETNS_RUN_DIR, netns)}", "--"]
    return out + argv


@dataclass
class Proc:
    """One tool process: how it was started, where its output went, how it ended."""

    role: str
    argv: list[str]
    netns: str | None
    stdout: Path
    stderr: Path
    popen: subprocess.Popen[bytes] | None = None
    started: str | None = None
    ended: str | None = None
    exit_status: int | None = None
    #: "itself" (it ended before latscope stopped it), "latscope" (SIGINT, then it ended), "killed".
    ended_by: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def launch(self, cwd: Path) -> None:
        try:
            with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
                self.popen = subprocess.Popen(wrapped(self.argv, self.netns), stdin=subprocess.DEVNULL, stdout=out,
                                              stderr=err, cwd=cwd, close_fds=True, process_group=0)
        except (OSError, subprocess.SubprocessError) as exc:
            raise CaptureError(f"cannot start {self.argv[0]} ({self.role}): {exc}") from None
        self.started = now_iso()

    def exited(self) -> bool:
        """True once the leader has exited; it stays a zombie (not reaped) so its group id stays ours."""
        if self.popen is None:
            return True
        if self.popen.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def wait_exit(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.exited():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def interrupt(self) -> None:
        """Ask the tool to stop and write its results (SIGINT, as a Ctrl-C would)."""
        if self.popen is not None and not self.exited():
            self.ended_by = self.ended_by or "latscope"
            os.kill(self.popen.pid, signal.SIGINT)

    def finish(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop the tool (SIGINT, then SIGKILL of its whole group after ``grace_s``) and reap it."""
        if self.popen is None:
            return
        if self.popen.returncode is None:
            if not self.exited():
                self.interrupt()
                if not self.wait_exit(grace_s):
                    self.ended_by = "killed"
            else:
                self.ended_by = self.ended_by or "itself"
            # The leader is dead or a zombie: its group id cannot have been reused; workers it left go too.
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.exit_status = self.popen.wait()
            self.ended = now_iso()

    def output_tail(self, limit: int = 300) -> str:
        """The last line the tool wrote (stderr first), for an error message."""
        for path in (self.stderr, self.stdout):
            try:
                lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
            except OSError:
                continue
            if lines:
                return lines[-1][:limit]
        return "no output"

    def describe(self) -> dict[str, Any]:
        return {"role": self.role, "netns": self.netns, "pid": self.pid, "started": self.started,
                "ended": self.ended, "exit_status": self.exit_status, "ended_by": self.ended_by, **self.extra}


def children_of(pid: int, proc_root: Path = Path("/proc")) -> list[int]:
    """Processes whose parent is ``pid``."""
    out = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            out.append(int(entry.name))
    return out


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` has open."""
    out: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


#: /proc/net/tcp states.
TCP_ESTABLISHED, TCP_LISTEN = "01", "0A"


def sockets_of(pid: int, proto: str) -> list[tuple[int, int, str]]:
    """(local port, remote port, state) of ``pid``'s own ``proto`` (tcp/udp) sockets, v4 and v6."""
    mine = socket_inodes(pid)
    out = []
    for name in (proto, proto + "6"):
        try:
            text = Path(f"/proc/{pid}/net/{name}").read_text()
        except OSError:
            continue
        for line in text.splitlines()[1:]:
            f = line.split()
            if len(f) < 10 or not f[9].isdigit() or int(f[9]) not in mine:
                continue
            out.append((int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16), f[3]))
    return out
