"""`latscope agent` and `run --from/--to` between two "hosts": two namespaces the test builds, an agent in each.

Orchestrated runs in each direction and both at once; strangers (no key, a
wrong key, a replayed answer, 10,000 garbage connections, oversized and
tampered frames) against a running agent, which keeps serving; an agent
killed mid-run and a controller killed mid-run; the owner's limits.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from latscope import netns
from latscope.errors import ConfigError
from latscope.probe.auth import load_key
from latscope.remote.channel import Channel, ChannelClosed
from latscope.remote.netauth import SealedChannel, _mac
from latscope.remote.netlink import connect
from latscope.topo.veth import RECEIVER_ADDR4, SENDER_ADDR4
from tests.integration.agenthosts import A, Agent, B, Hosts, two_hosts, write_key
from tests.integration.runwatch import wait_for_packets

pytestmark = [pytest.mark.root, pytest.mark.slow]


def stored(results: Path) -> list[dict[str, Any]]:
    """Every run.json in ``results``, oldest first."""
    docs = [json.loads(p.read_text()) for p in results.glob("*/run.json")]
    return sorted(docs, key=lambda d: d["run_id"])


def pid_gone(pid: int, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def worker_pids(log: str) -> list[int]:
    return [int(line.split("(pid ")[1].split(")")[0]) for line in log.splitlines() if "started" in line]


@pytest.fixture
def hosts(tmp_path: Path):
    with two_hosts(tmp_path) as h:
        yield h


def test_directions_and_both(hosts: Hosts, results: Path) -> None:
    """Forward, reverse and both: each stream goes the right way with every packet, and both hosts are stored."""
    for direction in ("forward", "reverse"):
        r = hosts.run(results, "--from", A, "--to", B, "--key-file", str(hosts.key), "--count", "800",
                      "--period", "1ms", "--direction", direction, "--name", direction)
        assert r.returncode == 0, r.stderr
    r = hosts.run(results, "--from", A, "--to", B, "--key-file", str(hosts.key), "--count", "800",
                  "--period", "1ms", "--direction", "both", "--name", "dual")
    assert r.returncode == 0, r.stderr
    runs = {d["name"]: d for d in stored(results)}
    assert sorted(runs) == ["dual-forward", "dual-reverse", "forward", "reverse"]
    towards = {"forward": RECEIVER_ADDR4, "reverse": SENDER_ADDR4}
    for name, doc in runs.items():
        way = doc["config"]["direction"]
        assert name.endswith(way)
        assert doc["status"] == "complete"
        assert doc["completeness"]["sent"] == 800 and doc["completeness"]["received"] == 800
        assert doc["completeness"]["lost"] == 0
        assert doc["source"]["direction"] == way and doc["agents"]["direction"] == way
        assert doc["config"]["receiver_endpoint"]["address"] == towards[way]
        assert doc["config"]["topology"] == "agents"
        # Both hosts' part: the agents, their addresses, their own environments and the clock checks.
        hosts_doc = doc["environment"]["hosts"]
        assert hosts_doc["from"]["agent"] == A and hosts_doc["to"]["agent"] == B
        assert hosts_doc["from"]["address"] == SENDER_ADDR4 and hosts_doc["to"]["address"] == RECEIVER_ADDR4
        for side in ("from", "to"):
            assert hosts_doc[side]["environment"]["kernel"]
            assert hosts_doc["clock"][side]["offset_to_controller"]["samples"] == 16
            # Each agent checked its own host's synchronisation; the run's clock check is built from both.
            sync = hosts_doc["clock"][side]["sync"]
            assert "unsynchronised" in sync["adjtimex"] and "bound_ns" in sync
        assert set(doc["summary"]["clock_check"]["hosts"]) == {"from", "to"}
    fwd, rev = runs["dual-forward"], runs["dual-reverse"]
    assert fwd["config"]["stream"] != rev["config"]["stream"]
    assert fwd["agents"]["siblings"] == [rev["run_id"]] and rev["agents"]["siblings"] == [fwd["run_id"]]
    # At the same time: both streams were scheduled from one start.
    assert fwd["config"]["base_time_ns"] == rev["config"]["base_time_ns"]
    # Each agent ran a sender and a receiver for the dual run, one at a time for the others.
    for agent in (hosts.a, hosts.b):
        log = agent.text()
        assert log.count("started sender-") == 2 and log.count("started receiver-") == 2
        assert "refused" not in log


def test_local_half(hosts: Hosts, results: Path) -> None:
    """--from local: this host sends (its own worker), the agent receives; --to local the other way."""
    r = hosts.run(results, "--from", "local", "--to", B, "--key-file", str(hosts.key), "--count", "500",
                  "--name", "out")
    assert r.returncode == 0, r.stderr
    r = hosts.run(results, "--from", B, "--to", "local", "--key-file", str(hosts.key), "--count", "500",
                  "--name", "in")
    assert r.returncode == 0, r.stderr
    runs = {d["name"]: d for d in stored(results)}
    assert runs["out"]["completeness"]["received"] == 500 and runs["in"]["completeness"]["received"] == 500
    assert runs["out"]["config"]["receiver_endpoint"]["address"] == RECEIVER_ADDR4
    # Host A is reached at its address on its connection to B's agent.
    assert runs["in"]["config"]["receiver_endpoint"]["address"] == SENDER_ADDR4
    assert runs["in"]["environment"]["hosts"]["to"]["agent"] == "local"
    assert hosts.a.text().count("authenticated") == 0  # A's agent was never asked


def _handshake_frames(sock: socket.socket, key: bytes) -> tuple[dict[str, Any], bytes]:
    """A correct answer to the agent's challenge on ``sock``: the frame sent, and the session key."""
    chan = Channel(sock.fileno())
    challenge = chan.recv(5.0)
    assert challenge is not None and challenge.header["op"] == "challenge"
    na = bytes.fromhex(challenge.header["nonce"])
    nc = secrets.token_bytes(32)
    answer = {"op": "auth", "nonce": nc.hex(), "mac": _mac(key, "controller", na, nc).hex()}
    chan.send(answer)
    ok = chan.recv(5.0)
    assert ok is not None and ok.header["ok"] and ok.header["mac"] == _mac(key, "agent", na, nc).hex()
    return answer, _mac(key, "session", na, nc)


def _refused(agent: Agent, sock: socket.socket) -> None:
    """The agent closes ``sock`` (it answers at most one refusal first)."""
    sock.settimeout(10)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:  # closed with our bytes unread: a reset, not a FIN
            break
        if not chunk:
            break
        data += chunk
        assert len(data) < 1 << 16
    sock.close()


def _garbage(agent: Agent, ns: str, n: int, deadline_s: float) -> int:
    """``n`` connections from ``ns`` that each send junk (or nothing) and hang up; how many were made."""
    def flood() -> int:
        made = 0
        end = time.monotonic() + deadline_s
        junk = [b"GET / HTTP/1.0\r\n\r\n", b"\x00\x00\x00\x05hello", b"\xff\xff\xff\xff", b"",
                b"\x00\x00\x00\x02{}" + b"x" * 100, b"\x00\x00\x00\x07[1,2,3]"]
        for i in range(n):
            if time.monotonic() > end:
                break
            try:
                s = socket.create_connection((agent.address, 48501), timeout=5)
            except OSError:
                continue
            try:
                if junk[i % len(junk)]:
                    s.sendall(junk[i % len(junk)])
            except OSError:
                pass
            s.close()
            made += 1
        return made

    return netns.in_namespace(ns, flood)


def test_strangers_are_refused_and_the_agent_keeps_serving(hosts: Hosts, results: Path, tmp_path: Path) -> None:
    """No key, a wrong key, a replayed answer, garbage, oversized and tampered frames: refused, logged, and the
    next real run works."""
    b, ns = hosts.b, hosts.ns_a
    key = load_key(str(hosts.key))
    # No key: a request instead of the answer to the challenge.
    s = b.connect(ns)
    Channel(s.fileno()).send({"op": "spawn", "id": 1, "role": "sender", "spec": {}})
    _refused(b, s)
    b.wait_log("refused: expected the answer to the challenge, got 'spawn'")
    # A wrong key, through the controller's own code: it says so, the agent logs it.
    wrong = write_key(tmp_path / "wrong.key", b"not-the-key")
    with pytest.raises(ConfigError, match="refused: authentication failed"):
        netns.in_namespace(ns, connect, B, load_key(str(wrong)))
    b.wait_log("refused: wrong key")
    # A fake agent (wrong key) does not convince the controller either.
    # A replayed answer: a correct answer recorded on one connection, sent again on another.
    s1 = b.connect(ns)
    answer, _session = _handshake_frames(s1, key)
    s1.close()
    s2 = b.connect(ns)
    chan = Channel(s2.fileno())
    assert chan.recv(5.0) is not None  # a fresh challenge
    chan.send(answer)
    _refused(b, s2)
    b.wait_log("refused: replayed answer")
    # Oversized frames: before authentication (a 2 GiB header), and after it (a 100 KiB request, a payload).
    s = b.connect(ns)
    s.sendall(struct.pack(">I", 1 << 31))
    _refused(b, s)
    b.wait_log(f"frame header of {1 << 31} bytes")
    for header, payload, reason in (({"op": "hello", "id": 1, "pad": "x" * 100_000}, b"", "frame header of"),
                                    ({"op": "hello", "id": 1}, b"p" * 10, "bad payload size 10")):
        s = b.connect(ns)
        _answer, session = _handshake_frames(s, key)
        sealed = SealedChannel(s.fileno(), session, role="controller", max_header=1 << 20, max_payload=1 << 20)
        try:
            sealed.send(header, payload)
        except ChannelClosed:
            pass  # the agent hung up as soon as it read the length
        _refused(b, s)
        b.wait_log(f"dropped: {reason}")
    # Tampered: a sealed frame whose MAC is wrong (as if changed on the way).
    s = b.connect(ns)
    _answer, session = _handshake_frames(s, key)
    SealedChannel(s.fileno(), b"\0" * 32, role="controller", max_header=1 << 20, max_payload=0).send(
        {"op": "hello", "id": 1})
    _refused(b, s)
    b.wait_log("dropped: a frame failed its MAC")
    # Authenticated but malformed or unknown requests: refused with the reason, the connection kept.
    s = b.connect(ns)
    _answer, session = _handshake_frames(s, key)
    sealed = SealedChannel(s.fileno(), session, role="controller", max_header=1 << 20, max_payload=0)
    for rid, req, reason in ((1, {"op": "exec", "argv": ["sh", "-c", "id"]}, "unknown request 'exec'"),
                             (2, {"op": "spawn", "role": "shell", "wid": "shell-1", "spec": {}}, "unknown role"),
                             (3, {"op": "spawn", "role": "sender", "wid": "sender-1", "spec": "x"},
                              "the spec is not a JSON object"),
                             (4, {"op": "spawn", "role": "receiver", "wid": "receiver-1",
                                  "spec": {"listen": {"family": "inet", "address": "0.0.0.0", "port": 48500},
                                           "stream_log": "/etc/passwd", "netns": "other"}},
                              "netns: the agent measures in its own network namespace"),
                             (5, {"op": "spawn", "role": "sender", "wid": "sender-2",
                                  "spec": {"dest": {"family": "inet", "address": RECEIVER_ADDR4, "port": 48500},
                                           "stream": 1, "results_dir": "/root"}},
                              "results_dir: the agent does not take paths"),
                             (6, {"op": "signal", "wid": "x-1", "sig": 9999}, "the agent passes on only")):
        sealed.send({**req, "id": rid})
        frame = sealed.recv(10.0)
        assert frame is not None and frame.header["re"] == rid and not frame.header["ok"]
        assert reason in frame.header["error"]
    sealed.send({"op": "hello", "id": 7})
    frame = sealed.recv(10.0)
    assert frame is not None and frame.header["ok"] and frame.header["agent"] == "latscope"
    s.close()
    # 10,000 garbage connections, bounded in time.
    made = _garbage(b, ns, 10_000, deadline_s=240)
    assert made >= 9_000
    b.wait_log("refused", count=made // 2, timeout_s=120)
    assert b.proc.poll() is None
    # The agent never ran anything for any of them ...
    assert "started" not in b.text()
    # ... and the next real run works.
    r = hosts.run(results, "--from", A, "--to", B, "--key-file", str(hosts.key), "--count", "500")
    assert r.returncode == 0, r.stderr
    assert stored(results)[0]["completeness"]["received"] == 500


def test_wrong_key_at_the_controller(hosts: Hosts, results: Path, tmp_path: Path) -> None:
    """`run` with a key the agents do not hold: one clear line, exit 2, nothing stored, nothing started."""
    wrong = write_key(tmp_path / "wrong.key", b"guess")
    r = hosts.run(results, "--from", A, "--to", B, "--key-file", str(wrong), "--count", "100")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == f"latscope: error: agent {A}: refused: authentication failed"
    assert stored(results) == []
    assert "started" not in hosts.a.text() + hosts.b.text()


def test_agent_killed_mid_run(hosts: Hosts, results: Path) -> None:
    """The receiving host's agent dies: the sender is stopped, and the run is stored interrupted with the sender's
    packets (their arrival unobserved)."""
    proc = subprocess.Popen(hosts.run_argv(results, "--from", A, "--to", B, "--key-file", str(hosts.key),
                                           "--count", "30000", "--name", "cut"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_packets(results, proc, 300)
        receiver_pid = worker_pids(hosts.b.text())[0]
        hosts.b.proc.kill()
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    [doc] = stored(results)
    assert doc["status"] == "interrupted" and doc["name"] == "cut"
    assert 300 <= doc["completeness"]["sent"] < 30_000
    assert doc["completeness"]["received"] == 0  # the receive times died with the receiver
    assert doc["capture"]["receiver"]["died"].startswith(f"lost with its agent {B}")
    assert "the receiver was lost with its agent" in err
    # The receiver worker went with its agent; the sender's agent stopped its sender.
    assert pid_gone(receiver_pid)
    hosts.a.wait_log("sender-")
    hosts.a.wait_log("ended (status")


def test_controller_killed_stops_both_halves(hosts: Hosts, results: Path) -> None:
    """SIGKILL to the controller: both agents see it go and stop their workers; nothing is stored."""
    proc = subprocess.Popen(hosts.run_argv(results, "--from", A, "--to", B, "--key-file", str(hosts.key),
                                           "--count", "60000"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_packets(results, proc, 300)
    finally:
        # `ip netns exec` execs latscope: the pid is the controller's.
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    for agent in (hosts.a, hosts.b):
        log = agent.wait_log("the controller went away")
        assert "stopping 1 workers" in log
        [pid] = worker_pids(log)
        assert pid_gone(pid)
        agent.wait_log("stopped ")
    assert stored(results) == []


def test_limits(tmp_path: Path, results: Path) -> None:
    """Over --max-rate, over --max-duration, a port or interface not allowed, a second controller: refused with
    the reason (at the controller and in the agent's log), nothing stored; within them, the run works."""
    with two_hosts(tmp_path, agent_a=("--allow-interface", "lo"),
                   agent_b=("--max-rate", "2000", "--max-duration", "30s", "--allow-port", "48500-48510")) as h:
        key = str(h.key)
        cases = (
            (("--from", "local", "--to", B, "--period", "100us", "--count", "100", "--direction", "reverse"),
             "a period of 100000 ns is 10000 packets/s: over this agent's --max-rate 2000"),
            (("--from", "local", "--to", B, "--period", "1ms", "--count", "40000", "--direction", "reverse"),
             "40000 packets every 1000000 ns take 40 s: over this agent's --max-duration 30 s"),
            (("--from", "local", "--to", B, "--count", "100", "--port", "48600"),
             "port 48600 is not in --allow-port"),
            (("--from", A, "--to", B, "--count", "100"),
             f"the route to {RECEIVER_ADDR4} leaves by"),
        )
        for args, reason in cases:
            r = h.run(results, *args, "--key-file", key)
            assert r.returncode == 1, r.stderr
            assert reason in r.stderr, r.stderr
        assert stored(results) == []
        for reason in (r for _a, r in cases[:3]):
            assert reason in h.b.text()
        assert "not an interface in --allow-interface" in h.a.text()
        # One measurement at a time: a second controller is told who is measuring. (The first is long enough
        # for a second controller to start on a loaded machine: the SIGTERM below ends it well before.)
        proc = subprocess.Popen(h.run_argv(results, "--from", "local", "--to", B, "--key-file", key,
                                           "--count", "25000", "--name", "first"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_packets(results, proc, 200)
            r = h.run(results, "--from", "local", "--to", B, "--key-file", key, "--count", "100")
            assert r.returncode == 1
            assert f"agent {B} is busy: a measurement for {SENDER_ADDR4}:" in r.stderr
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        # SIGTERM to the controller stops both halves in order: the run so far is stored, interrupted.
        assert proc.returncode == 1, err
        [doc] = stored(results)
        assert doc["name"] == "first" and doc["status"] == "interrupted"
        assert doc["completeness"]["received"] >= 200
        # Within the limits the agent serves.
        r = h.run(results, "--from", "local", "--to", B, "--key-file", key, "--count", "300", "--port", "48505")
        assert r.returncode == 0, r.stderr


def test_round_trips_through_agents(hosts: Hosts, results: Path) -> None:
    """--mode rtt between agents: B's agent runs the probe's reflector role as it runs a receiver."""
    r = hosts.run(results, "--from", A, "--to", B, "--key-file", str(hosts.key), "--count", "500", "--mode", "rtt")
    assert r.returncode == 0, r.stderr
    [doc] = stored(results)
    assert doc["source"]["metric"] == "round-trip"
    assert doc["completeness"]["received"] == 500
    assert "started reflector-" in hosts.b.text() and "started sender-" in hosts.a.text()
