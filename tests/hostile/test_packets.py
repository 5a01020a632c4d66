"""Hostile packets against `recv` and `run`: forgeries, floods, huge numbers, forged seqs of dropped packets.

Each test plays a stranger on the path (tests/hostile/peer.py) against the
real CLI in namespaces the test or latscope created, and checks that the real
stream is measured completely, that every forged datagram is counted as
foreign for the right reason, that nothing crashes and that the exit code is
right. Issue 10 lists the attacks; docs/recv.md says what each defence is.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time
from pathlib import Path

import pytest

from latscope import netns as ns
from latscope.probe import wire
from latscope.store.layout import ResultsStore
from latscope.topo.veth import RECEIVER_ADDR4, veth_pair
from tests.conftest import BIN
from tests.hostile import peer
from tests.integration.netutil import nft_drop_seq_range, nft_dropped, wait_for_namespace

pytestmark = pytest.mark.root

PORT = 48_800
COUNT = 1000


def _start_recv(results: Path, netns: str, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([str(BIN / "latscope"), "recv", "--netns", netns, "--port", str(PORT), "--json",
                             "--idle-timeout", "3s", "--results", str(results), *extra], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline()  # "latscope: listening on ..." once the socket is bound
    assert "listening" in line, line
    return proc


def _send(netns: str, *extra: str, count: int = COUNT, period: str = "500us") -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "latscope"), "send", "--netns", netns, "--dest", f"{RECEIVER_ADDR4}:{PORT}",
                           "--count", str(count), "--period", period, "--json", "-q", *extra],
                          capture_output=True, text=True, timeout=120)


def _finish(recv: subprocess.Popen[str]) -> tuple[dict, str]:
    try:
        out, err = recv.communicate(timeout=60)
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.communicate()
    assert recv.returncode == 0, err
    return json.loads(out), err


def _foreign(doc: dict) -> dict[str, int]:
    return {k: v for k, v in doc["capture"]["receiver"]["foreign"].items() if v}


def _complete(doc: dict, count: int = COUNT, lost: int = 0) -> None:
    """The real stream was measured completely: every packet sent is received or (exactly) lost."""
    assert doc["status"] == "complete"
    assert doc["packets"]["sent"] == count
    assert doc["packets"]["received"] == count - lost and doc["packets"]["lost"] == lost


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    return key


# -- recv ------------------------------------------------------------------------------------------------

def test_recv_forged_datagrams_before_the_sender_do_not_capture_it(results: Path) -> None:
    """One forged data packet first (and the issue's count 2**32-1 and 20,000,000 ones): the real run is measured."""
    with veth_pair() as path:
        recv = _start_recv(results, path.receiver.netns)
        forger = peer.Forger(path.sender.netns, (RECEIVER_ADDR4, PORT))
        try:
            forger.send(peer.data(0, 4242, 99), peer.v1_data(2**32 - 1), peer.v1_data(20_000_000))
            send = _send(path.sender.netns, "--name", "real")
        finally:
            forger.close()
        doc, _err = _finish(recv)
    assert send.returncode == 0, send.stderr
    _complete(doc)
    assert doc["name"] == "real" and doc["config"]["stream"] == json.loads(send.stdout)["stream"]
    assert _foreign(doc) == {"early": 1, "version": 2}
    assert doc["capture"]["receiver"]["capacity"] == COUNT


def test_recv_flood_before_the_first_packet_is_counted_and_ignored(results: Path) -> None:
    """A flood of junk and well-framed packets of random streams, before and during the run: all foreign."""
    rng = random.Random(10)
    with veth_pair() as path:
        recv = _start_recv(results, path.receiver.netns)
        forger = peer.Forger(path.sender.netns, (RECEIVER_ADDR4, PORT))
        flooding = threading.Thread(target=peer.flood, args=(forger, 6000, 3.0, rng))
        try:
            flooding.start()
            time.sleep(0.5)  # the flood is well under way before the sender's first packet
            send = _send(path.sender.netns)
            flooding.join(30)
        finally:
            forger.close()
        doc, _err = _finish(recv)
    assert send.returncode == 0, send.stderr
    _complete(doc)
    assert doc["packets"]["foreign"] == forger.sent == 6000
    assert set(_foreign(doc)) <= {"early", "stream", "short", "magic", "version", "length", "kind"}


def test_recv_hellos_with_bad_fields_are_foreign(results: Path) -> None:
    """Hellos with {"tags": 5}, {"base_time_ns": "x"}, count 2**32-1, deep nesting, a 5000-digit int: foreign."""
    bad = [peer.hello(7, 7, peer.hello_doc(tags=5)), peer.hello(7, 7, {**peer.hello_doc(), "base_time_ns": "x"}),
           peer.hello(7, 7, peer.hello_doc(count=2**32 - 1)), peer.raw_hello(7, 7, b"[" * 50_000),
           peer.raw_hello(7, 7, b'{"count": ' + b"9" * 5000 + b"}")]
    with veth_pair() as path:
        recv = _start_recv(results, path.receiver.netns)
        forger = peer.Forger(path.sender.netns, (RECEIVER_ADDR4, PORT))
        try:
            forger.send(*bad)
            send = _send(path.sender.netns, "--tag", "real")
        finally:
            forger.close()
        doc, _err = _finish(recv)
    assert send.returncode == 0, send.stderr
    _complete(doc)
    assert _foreign(doc) == {"hello": 5} and doc["tags"] == ["real"]


def test_recv_forged_end_and_hello_mid_run_change_nothing(results: Path) -> None:
    """Seen the nonce? A forged end with seq 10**10 or 2**64-1 is out of range; another hello does not take over."""
    with veth_pair() as path:
        recv = _start_recv(results, path.receiver.netns)
        sniffer = peer.Sniffer(path.receiver.netns, PORT)
        forger = peer.Forger(path.sender.netns, (RECEIVER_ADDR4, PORT))
        sender = subprocess.Popen([str(BIN / "latscope"), "send", "--netns", path.sender.netns, "--dest",
                                   f"{RECEIVER_ADDR4}:{PORT}", "--count", str(COUNT), "--period", "1ms", "-q"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            h = sniffer.next_header(wire.KIND_DATA)
            forger.send(peer.end(h.stream, h.nonce, 10**10), peer.end(h.stream, h.nonce, 2**64 - 1),
                        peer.end(h.stream, 0, 5), peer.hello(h.stream, h.nonce ^ 1, peer.hello_doc(count=20_000_000)))
            sender.wait(60)
        finally:
            forger.close()
            sniffer.close()
            if sender.poll() is None:
                sender.kill()
        doc, _err = _finish(recv)
    assert sender.returncode == 0
    _complete(doc)
    assert _foreign(doc) == {"range": 2, "nonce": 1, "other_hello": 1}
    assert doc["capture"]["receiver"]["capacity"] == COUNT


def test_recv_dropped_packets_forged_without_the_nonce_stay_lost(results: Path) -> None:
    """The kernel drops seqs 300-309; forged copies with the stream id but not the nonce are foreign, not received."""
    with veth_pair() as path:
        nft_drop_seq_range(path.receiver.netns, PORT, 300, 309, spare_sport=peer.FORGER_SPORT)
        recv = _start_recv(results, path.receiver.netns)
        sniffer = peer.Sniffer(path.receiver.netns, PORT)
        forger = peer.Forger(path.sender.netns, (RECEIVER_ADDR4, PORT))
        sender = subprocess.Popen([str(BIN / "latscope"), "send", "--netns", path.sender.netns, "--dest",
                                   f"{RECEIVER_ADDR4}:{PORT}", "--count", "1500", "--period", "1ms", "-q"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            h = sniffer.next_header(wire.KIND_HELLO)
            _wait_dropped(path.receiver.netns, 10)
            forger.send(*(peer.data(s, h.stream, 0) for s in range(300, 310)),
                        *(peer.data(s, h.stream, random.getrandbits(64) | 1) for s in range(300, 310)))
            sender.wait(60)
        finally:
            forger.close()
            sniffer.close()
            if sender.poll() is None:
                sender.kill()
        doc, _err = _finish(recv)
    _complete(doc, 1500, lost=10)
    assert _foreign(doc) == {"nonce": 20}
    flags = ResultsStore(results).resolve(doc["run_id"]).samples(["seq", "flags"])
    assert [int(s) for s, f in zip(flags["seq"], flags["flags"], strict=True) if f & 1] == list(range(300, 310))


def test_recv_with_a_key_refuses_forgeries_that_carry_the_nonce(results: Path, key_file: Path) -> None:
    """--key-file on both halves: dropped seqs forged with the sniffed nonce (no MAC, a wrong MAC) stay lost."""
    with veth_pair() as path:
        nft_drop_seq_range(path.receiver.netns, PORT, 300, 309, spare_sport=peer.FORGER_SPORT)
        recv = _start_recv(results, path.receiver.netns, "--key-file", str(key_file), "--stream", "4711")
        sniffer = peer.Sniffer(path.receiver.netns, PORT)
        forger = peer.Forger(path.sender.netns, (RECEIVER_ADDR4, PORT))
        # Before the sender: a hello for the pinned stream, without and with a wrong MAC.
        forger.send(peer.hello(4711, 5, peer.hello_doc()), peer.hello(4711, 5, peer.hello_doc(), key=b"guess"))
        sender = subprocess.Popen([str(BIN / "latscope"), "send", "--netns", path.sender.netns, "--dest",
                                   f"{RECEIVER_ADDR4}:{PORT}", "--count", "1500", "--period", "1ms", "-q",
                                   "--stream", "4711", "--key-file", str(key_file)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            h = sniffer.next_header(wire.KIND_DATA)
            assert h.flags & wire.FLAG_MAC and h.length == wire.MIN_SIZE_MAC
            _wait_dropped(path.receiver.netns, 10)
            for s in range(300, 310):
                forger.send(peer.data(s, h.stream, h.nonce, size=h.length),
                            peer.data(s, h.stream, h.nonce, size=h.length, flags=wire.FLAG_MAC,
                                      mac=os.urandom(wire.MAC_SIZE)))
            forger.send(peer.end(h.stream, h.nonce, 300))
            sender.wait(60)
        finally:
            forger.close()
            sniffer.close()
            if sender.poll() is None:
                sender.kill()
        doc, _err = _finish(recv)
    assert sender.returncode == 0, sender.stderr.read() if sender.stderr else ""
    _complete(doc, 1500, lost=10)
    assert _foreign(doc) == {"auth": 23}
    assert doc["capture"]["receiver"]["authenticated"] is True


def test_recv_pinned_stream_ignores_another_senders_hello(results: Path) -> None:
    """`send --stream N` and `recv --stream N`: a complete forged session of another stream first changes nothing."""
    with veth_pair() as path:
        recv = _start_recv(results, path.receiver.netns, "--stream", "777")
        forger = peer.Forger(path.sender.netns, (RECEIVER_ADDR4, PORT))
        try:
            forger.send(peer.hello(778, 1, peer.hello_doc(count=3)), *(peer.data(i, 778, 1) for i in range(3)))
            send = _send(path.sender.netns, "--stream", "777")
        finally:
            forger.close()
        doc, _err = _finish(recv)
    assert send.returncode == 0, send.stderr
    _complete(doc)
    assert _foreign(doc) == {"stream": 4} and doc["config"]["stream"] == 777


def _wait_dropped(netns: str, n: int, timeout_s: float = 30.0) -> None:
    """Block until the drop rule has dropped ``n`` real packets (so the forgeries come after them)."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert netns in ns.owned(), f"{netns} is gone: the run ended before its packets reached the drop rule"
        if nft_dropped(netns) >= n:
            return
        assert time.monotonic() < deadline, "the real packets never reached the drop rule"
        time.sleep(0.05)


# -- run ---------------------------------------------------------------------------------------------------

def _start_run(results: Path, *extra: str, count: int = COUNT) -> subprocess.Popen[str]:
    # Time to attack before the first packet: the attack starts Python processes in the namespaces, which on
    # a loaded 2-CPU machine (the suite's other workers) took more than the 4 s this once had.
    base = time.clock_gettime_ns(time.CLOCK_REALTIME) + 12_000_000_000
    return subprocess.Popen([str(BIN / "latscope"), "run", "--count", str(count), "--period", "1ms", "--port",
                             str(PORT), "--base-time", str(base), "--json", "-q", "--results", str(results),
                             *extra], text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_run_forgeries_floods_and_forged_seqs_of_dropped_packets(results: Path) -> None:
    """`run` over veth: before its first data packet a forged packet, the issue's forgeries and a flood; then forged
    ends and forged copies of kernel-dropped seqs without the nonce. All foreign, the run is complete."""
    rng = random.Random(11)
    proc = _start_run(results, "--count", "1500")
    forger = sniffer = None
    try:
        rx_ns, tx_ns = f"latscope-{proc.pid}-rx", f"latscope-{proc.pid}-tx"
        wait_for_namespace(rx_ns)
        sniffer = peer.Sniffer(rx_ns, PORT)
        h = sniffer.next_header(wire.KIND_HELLO)  # the receiver listens before the sender starts
        nft_drop_seq_range(rx_ns, PORT, 300, 309, spare_sport=peer.FORGER_SPORT)
        forger = peer.Forger(tx_ns, (RECEIVER_ADDR4, PORT))
        forger.send(peer.data(0, h.stream ^ 1, 9), peer.v1_data(2**32 - 1, h.stream), peer.v1_data(20_000_000),
                    peer.hello(h.stream, h.nonce ^ 1, peer.hello_doc(count=20_000_000)),
                    peer.hello(h.stream, 3, peer.hello_doc(tags=5)),
                    peer.hello(h.stream, h.nonce, {**peer.hello_doc(), "base_time_ns": "x"}))
        peer.flood(forger, 2000, 1.0, rng)
        _wait_dropped(rx_ns, 10)
        forger.send(*(peer.data(s, h.stream, 0) for s in range(300, 310)),
                    peer.end(h.stream, h.nonce, 10**10), peer.end(h.stream, h.nonce, 2**64 - 1))
        out, err = proc.communicate(timeout=60)
    finally:
        for s in (forger, sniffer):
            if s is not None:
                s.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    doc = json.loads(out)
    _complete(doc, 1500, lost=10)
    foreign = _foreign(doc)
    assert doc["packets"]["foreign"] == forger.sent
    assert foreign["version"] == 2 and foreign["other_hello"] == 2 and foreign["range"] == 2 and foreign["hello"] == 1
    assert foreign["nonce"] == 10 and foreign["stream"] >= 1


def test_run_with_a_key_refuses_forged_seqs_that_carry_the_nonce(results: Path, key_file: Path) -> None:
    """`run --key-file`: copies of dropped seqs forged with the sniffed stream and nonce fail authentication."""
    proc = _start_run(results, "--key-file", str(key_file))
    forger = sniffer = None
    try:
        rx_ns, tx_ns = f"latscope-{proc.pid}-rx", f"latscope-{proc.pid}-tx"
        wait_for_namespace(rx_ns)
        sniffer = peer.Sniffer(rx_ns, PORT)
        h = sniffer.next_header(wire.KIND_HELLO)
        nft_drop_seq_range(rx_ns, PORT, 100, 109, spare_sport=peer.FORGER_SPORT)
        forger = peer.Forger(tx_ns, (RECEIVER_ADDR4, PORT))
        forger.send(peer.hello(h.stream, h.nonce, peer.hello_doc(count=20_000_000)))
        _wait_dropped(rx_ns, 10)
        forger.send(*(peer.data(s, h.stream, h.nonce, size=h.length) for s in range(100, 110)),
                    *(peer.data(s, h.stream, h.nonce, size=h.length, flags=wire.FLAG_MAC, mac=bytes(16))
                      for s in range(100, 110)),
                    peer.end(h.stream, h.nonce, 100))
        out, err = proc.communicate(timeout=60)
    finally:
        for s in (forger, sniffer):
            if s is not None:
                s.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    doc = json.loads(out)
    _complete(doc, lost=10)
    assert _foreign(doc) == {"auth": 22}
    assert doc["capture"]["receiver"]["authenticated"] is True and doc["config"]["size"] == wire.MIN_SIZE_MAC


# -- key files ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("verb", [["recv"], ["send", "--dest", f"{RECEIVER_ADDR4}:{PORT}"], ["run"]])
@pytest.mark.parametrize(("content", "mode", "needle"), [
    (b"secret", 0o644, "other users"), (b"", 0o600, "empty"),
])
def test_bad_key_files_are_usage_errors(tmp_path: Path, results: Path, verb: list[str], content: bytes, mode: int,
                                        needle: str) -> None:
    """A world-readable or empty key file: one line on stderr, exit 2, nothing started or stored."""
    key = tmp_path / "key"
    key.write_bytes(content)
    key.chmod(mode)
    r = subprocess.run([str(BIN / "latscope"), *verb, "--key-file", str(key), "--results", str(results)]
                       if verb[0] != "send" else [str(BIN / "latscope"), *verb, "--key-file", str(key)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert list(results.iterdir()) == []
