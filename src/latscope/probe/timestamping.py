"""Kernel socket timestamps (SO_TIMESTAMPING) and the TX error queue.

The kernel stamps a packet in the driver's transmit routine (TX software),
when the device receives it (RX software, before the protocol stack), and,
where the NIC can, on the wire (hardware). User-space clock reads cannot see
any of that: they only bracket the system calls.
"""

from __future__ import annotations

import socket
import struct

# include/uapi/asm-generic/socket.h (x86_64: the _OLD values take 64-bit timespecs).
SO_TIMESTAMPING = 37
SCM_TIMESTAMPING = SO_TIMESTAMPING
SO_TXTIME = 61
SCM_TXTIME = SO_TXTIME
SCM_TS_OPT_ID = 81  # Linux 6.13: per-sendmsg timestamp id

# include/uapi/linux/net_tstamp.h
TX_HARDWARE = 1 << 0
TX_SOFTWARE = 1 << 1
RX_HARDWARE = 1 << 2
RX_SOFTWARE = 1 << 3
SOFTWARE = 1 << 4
SYS_HARDWARE = 1 << 5
RAW_HARDWARE = 1 << 6
OPT_ID = 1 << 7
TX_SCHED = 1 << 8
TX_ACK = 1 << 9
OPT_CMSG = 1 << 10
OPT_TSONLY = 1 << 11
OPT_STATS = 1 << 12
OPT_PKTINFO = 1 << 13
OPT_TX_SWHW = 1 << 14

SO_EE_ORIGIN_TIMESTAMPING = 4
SCM_TSTAMP_SND = 0
IP_RECVERR = 11
IPV6_RECVERR = 25
SOL_PACKET = 263
PACKET_TX_TIMESTAMP = 16

RX_FLAGS = RX_SOFTWARE | RX_HARDWARE | SOFTWARE | RAW_HARDWARE
TX_FLAGS = TX_SOFTWARE | TX_HARDWARE | SOFTWARE | RAW_HARDWARE | OPT_ID | OPT_TSONLY | OPT_TX_SWHW

_TS3 = struct.Struct("qqqqqq")  # three struct timespec: software, legacy, raw hardware
_EE = struct.Struct("IBBBBII")  # struct sock_extended_err
ANCILLARY_SIZE = 512


def enable_rx(sock: socket.socket) -> None:
    """Ask for software and (where the NIC does it) hardware RX timestamps."""
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, RX_FLAGS)


def enable_tx(sock: socket.socket) -> None:
    """Ask for TX timestamps on the error queue, identified by OPT_ID, without payload copies."""
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, TX_FLAGS)


def timestamps(ancdata: list[tuple[int, int, bytes]]) -> tuple[int, int] | None:
    """(software_ns, hardware_ns) from SCM_TIMESTAMPING ancillary data; 0 where absent."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPING and len(data) >= _TS3.size:
            s0, n0, _s1, _n1, s2, n2 = _TS3.unpack_from(data)
            return s0 * 1_000_000_000 + n0, s2 * 1_000_000_000 + n2
    return None


def tx_report(ancdata: list[tuple[int, int, bytes]]) -> tuple[int, int, int] | None:
    """(id, software_ns, hardware_ns) of a TX timestamp read from the error queue, else None."""
    ts = None
    key = None
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPING and len(data) >= _TS3.size:
            s0, n0, _s1, _n1, s2, n2 = _TS3.unpack_from(data)
            ts = (s0 * 1_000_000_000 + n0, s2 * 1_000_000_000 + n2)
        elif len(data) >= _EE.size and (
            (level == socket.IPPROTO_IP and kind == IP_RECVERR)
            or (level == socket.IPPROTO_IPV6 and kind == IPV6_RECVERR)
            or (level == SOL_PACKET and kind == PACKET_TX_TIMESTAMP)
        ):
            _errno, origin, _type, _code, _pad, info, data_id = _EE.unpack_from(data)
            if origin == SO_EE_ORIGIN_TIMESTAMPING and info == SCM_TSTAMP_SND:
                key = data_id
    if ts is None or key is None:
        return None
    return key, ts[0], ts[1]
