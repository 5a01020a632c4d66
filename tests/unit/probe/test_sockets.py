"""probe.sockets: the receiving socket holds a stall's worth of packets, raw Ethernet as UDP."""

from __future__ import annotations

import socket

import pytest

from latscope.probe.sockets import open_receiver
from latscope.probe.spec import Endpoint

PACKET_OUTGOING = 4
N = 3000


def _queued(sock: socket.socket, port: int) -> int:
    """Datagrams to ``port`` that ``sock`` holds (read without waiting); on a packet socket, the incoming
    UDP frames to that port (the IP header first: a SOCK_DGRAM packet socket strips the link header)."""
    sock.setblocking(False)
    n = 0
    while True:
        try:
            data, addr = sock.recvfrom(2048)
        except BlockingIOError:
            return n
        ours = sock.family != socket.AF_PACKET or (
            addr[2] != PACKET_OUTGOING and len(data) >= 28 and data[9] == 17 and int.from_bytes(data[22:24]) == port)
        n += ours


# serial: a packet socket on lo sees every test's loopback traffic, and a parallel test's UDP flood
# (--stress net:udp on the loopback topology) could fill even the large buffer.
@pytest.mark.serial
@pytest.mark.root  # a raw packet socket needs CAP_NET_RAW
@pytest.mark.parametrize("family", ["packet", "inet"])
def test_a_stalled_receiver_keeps_thousands_of_packets(family: str) -> None:
    """3000 datagrams arrive while the receiver reads nothing (a stall of a loaded machine's receiver):
    all of them wait in its socket. The kernel's default buffer (212 KB) held a few hundred; `run --l2`
    lost packets that way on a loaded machine, UDP had been given a large buffer before."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    if family == "packet":
        sock = open_receiver(Endpoint("packet", ifname="lo"))
        target = port
    else:
        sock = open_receiver(Endpoint("inet", "127.0.0.1", 0))
        target = sock.getsockname()[1]
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(N):
            tx.sendto(i.to_bytes(4, "big") * 16, ("127.0.0.1", target))
        assert _queued(sock, target) == N
    finally:
        for s in (sock, sink, tx):
            s.close()
