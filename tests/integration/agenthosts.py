"""Two "hosts" for the agent tests: two namespaces with a veth between them, a `latscope agent` in each.

Host A is 198.18.0.1 (namespace ``...-tx``), host B 198.18.0.2 (``...-rx``);
each agent listens on its host's address, port 48501, started with
`ip netns exec` as a user would start it on a machine of its own. Each
agent's log goes to a file the test reads; the agent is ready when its log
says it listens. The controller (`latscope run --from/--to`) runs inside A's
namespace, as if A were the machine it was typed on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from latscope import netns
from latscope.topo.veth import RECEIVER_ADDR4, SENDER_ADDR4, veth_pair
from tests.conftest import BIN

PORT = 48_501
A, B = f"{SENDER_ADDR4}:{PORT}", f"{RECEIVER_ADDR4}:{PORT}"


@dataclass
class Agent:
    """A running agent: its process, its namespace, its log."""

    proc: subprocess.Popen[bytes]
    netns: str
    address: str
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout_s: float = 30.0, count: int = 1) -> str:
        """Block until the log holds ``needle`` ``count`` times; the log."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.text()
            if text.count(needle) >= count:
                return text
            if self.proc.poll() is not None:
                raise AssertionError(f"the agent ended (status {self.proc.returncode}):\n{text[-3000:]}")
            time.sleep(0.02)
        raise AssertionError(f"{needle!r} not in the agent's log within {timeout_s:.0f} s:\n{self.text()[-3000:]}")

    def connect(self, from_ns: str) -> socket.socket:
        """A TCP connection to the agent made from namespace ``from_ns``."""
        return netns.in_namespace(from_ns, socket.create_connection, (self.address, PORT), 5.0)


def start_agent(ns: str, address: str, key: Path, log: Path, *extra: str) -> Agent:
    with open(log, "wb") as fh:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, str(BIN / "latscope"), "agent", "--listen",
                                 f"{address}:{PORT}", "--key-file", str(key), *extra],
                                stdin=subprocess.DEVNULL, stdout=fh, stderr=fh)
    agent = Agent(proc, ns, address, log)
    agent.wait_log("listening on")
    return agent


def stop_agent(agent: Agent) -> int:
    """SIGTERM, as systemd stops it; its exit status."""
    if agent.proc.poll() is None:
        agent.proc.send_signal(signal.SIGTERM)
        try:
            agent.proc.wait(30)
        except subprocess.TimeoutExpired:
            agent.proc.kill()
            agent.proc.wait()
    return agent.proc.returncode


def write_key(path: Path, secret: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secret + b"\n")
    return path


@dataclass
class Hosts:
    """The two namespaces and their agents."""

    ns_a: str
    ns_b: str
    a: Agent
    b: Agent
    key: Path

    def run(self, results: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """`latscope run` from host A's namespace."""
        return subprocess.run(self.run_argv(results, *args), capture_output=True, text=True, timeout=timeout,
                              check=False)

    def run_argv(self, results: Path, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns_a, str(BIN / "latscope"), "run", "--results", str(results), "-q",
                *args]


@contextlib.contextmanager
def two_hosts(tmp: Path, agent_a: tuple[str, ...] = (), agent_b: tuple[str, ...] = ()) -> Iterator[Hosts]:
    """Namespaces A and B with their agents; everything stopped and removed afterwards."""
    key = write_key(tmp / "agent.key", os.urandom(24).hex().encode())
    with veth_pair() as path:
        assert path.sender.netns and path.receiver.netns
        agents: list[Agent] = []
        try:
            agents.append(start_agent(path.sender.netns, SENDER_ADDR4, key, tmp / "agent-a.log", *agent_a))
            agents.append(start_agent(path.receiver.netns, RECEIVER_ADDR4, key, tmp / "agent-b.log", *agent_b))
            yield Hosts(path.sender.netns, path.receiver.netns, agents[0], agents[1], key)
        finally:
            for agent in agents:
                stop_agent(agent)
