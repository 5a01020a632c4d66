"""A stranger on the path, for the hostile-packet tests: it sniffs the stream and forges datagrams.

Its sockets are opened inside a namespace the test (or latscope) created, from
a short-lived thread that entered it with setns: a socket keeps its namespace,
so the test can then use it from any thread. Every loop is bounded in count
and time; traffic goes only to the 198.18.0.0/15 addresses of those namespaces.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from latscope.errors import TopologyError
from latscope.netns import enter
from latscope.probe import wire

#: Source port of every forged datagram: the tests' nftables drop rules spare it.
FORGER_SPORT = 40_404
ETH_P_IP = 0x0800


def in_netns(netns: str, fn: Callable[[], Any]) -> Any:
    """fn() run on a thread that entered ``netns`` (setns changes only the calling thread's namespace)."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            # A namespace file appears before it is bind-mounted; until then setns says EINVAL.
            deadline = time.monotonic() + 10
            while True:
                try:
                    enter(netns)
                    break
                except TopologyError as exc:
                    if "Invalid argument" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread below, which re-raises it
            box["error"] = exc

    t = threading.Thread(target=body)
    t.start()
    t.join(30)
    if "error" in box:
        raise box["error"]
    return box["value"]


class Forger:
    """A UDP socket in ``netns`` that sends crafted datagrams to the receiver."""

    def __init__(self, netns: str, dest: tuple[str, int]) -> None:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", FORGER_SPORT))
            return s

        self.sock = in_netns(netns, make)
        self.dest = dest
        self.sent = 0

    def send(self, *datagrams: bytes) -> None:
        for d in datagrams:
            self.sock.sendto(d, self.dest)
            self.sent += 1

    def close(self) -> None:
        self.sock.close()


class Sniffer:
    """Watches UDP datagrams to ``port`` inside ``netns`` (AF_PACKET, every interface) and decodes headers."""

    def __init__(self, netns: str, port: int) -> None:
        self.sock = in_netns(netns, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM,
                                                          socket.htons(ETH_P_IP)))
        self.port = port

    def next_header(self, kind: int, timeout_s: float = 20.0) -> wire.Header:
        """The header of the next probe packet of ``kind`` seen on the wire."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                pkt, addr = self.sock.recvfrom(70_000)
            except TimeoutError:
                break
            if addr[2] == socket.PACKET_OUTGOING or len(pkt) < 28 or pkt[9] != socket.IPPROTO_UDP:
                continue
            ihl = (pkt[0] & 0x0F) * 4
            _sport, dport = struct.unpack_from("!HH", pkt, ihl)
            payload = pkt[ihl + 8:]
            if dport != self.port:
                continue
            h = wire.unpack(payload)
            if isinstance(h, wire.Header) and h.kind == kind:
                return h
        raise AssertionError(f"no probe packet of kind {kind} to port {self.port} within {timeout_s} s")

    def close(self) -> None:
        self.sock.close()


def data(seq: int, stream: int, nonce: int, *, size: int = 64, flags: int = 0, mac: bytes | None = None) -> bytes:
    """A data packet (optionally ending in ``mac``, right or wrong)."""
    buf = bytearray(size)
    wire.pack_into(buf, kind=wire.KIND_DATA, length=size, stream=stream, nonce=nonce, seq=seq,
                   sched_ns=1, wake_ns=2, send_ns=3, flags=flags)
    if mac is not None:
        buf[-wire.MAC_SIZE:] = mac
    return bytes(buf)


def hello(stream: int, nonce: int, doc: dict[str, Any], key: bytes | None = None) -> bytes:
    return wire.hello_payload(stream, nonce, doc, 64, key)


def end(stream: int, nonce: int, sent: int) -> bytes:
    return wire.end_payload(stream, nonce, sent, [], 64)


def v1_data(count: int, stream: int = 12345, seq: int = 0) -> bytes:
    """The issue's forgery in the format before the nonce (version 1): a data packet with a count field."""
    return struct.pack("!4sBBHIQqqqIIqBBH", b"LTSP", 1, 0, 64, stream, seq, 1, 2, 3, 1_000_000, count, 0, 0, 0, 0)


def hello_doc(count: int = 1000, **extra: Any) -> dict[str, Any]:
    return {"count": count, "period_ns": 1_000_000, "size": 64,
            "base_time_ns": time.clock_gettime_ns(time.CLOCK_REALTIME) + 10**9, **extra}


def raw_hello(stream: int, nonce: int, body: bytes) -> bytes:
    """A hello whose body is exactly ``body`` (not necessarily a valid JSON document)."""
    total = wire.HEADER_SIZE + len(body)
    buf = bytearray(total)
    wire.pack_into(buf, kind=wire.KIND_HELLO, length=total, stream=stream, nonce=nonce, seq=0)
    buf[wire.HEADER_SIZE:] = body
    return bytes(buf)


def junk(rng: random.Random) -> bytes:
    """One datagram of a flood: random bytes, or a well-framed data packet of a random stream and nonce."""
    if rng.random() < 0.3:
        return rng.randbytes(rng.randrange(1, 200))
    return data(rng.randrange(2**64), rng.randrange(2**32), rng.randrange(2**64))


def flood(forger: Forger, n: int, seconds: float, rng: random.Random,
          make: Callable[[random.Random], bytes] = junk) -> None:
    """Send ``n`` datagrams spread over ``seconds`` (bounded in both), paced so no socket buffer overflows."""
    gap = seconds / max(n, 1)
    start = time.monotonic()
    for i in range(n):
        forger.send(make(rng))
        ahead = start + (i + 1) * gap - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        if time.monotonic() - start > seconds + 5:
            break


def run_json(results: str | os.PathLike, run_id: str) -> dict[str, Any]:
    """run.json of a stored run (the capture facts hold the foreign counts by reason)."""
    with open(os.path.join(results, run_id, "run.json"), encoding="utf-8") as fh:
        return json.load(fh)
