"""Opening the probe's sockets: UDP over IPv4/IPv6, or raw Ethernet over AF_PACKET."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from latscope.errors import CaptureError, ConfigError
from latscope.probe import timestamping as ts
from latscope.probe.clock import CLOCK_TAI
from latscope.probe.spec import Endpoint

ETH_P_ALL = 0x0003
ETH_P_8021Q = 0x8100
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 0x10
IPV6_TCLASS = getattr(socket, "IPV6_TCLASS", 67)
SOF_TXTIME_REPORT_ERRORS = 2
_AUX = struct.Struct("IIIHHHH")  # struct tpacket_auxdata


@dataclass
class SenderSocket:
    """A connected sending socket; frames are prefix + probe payload."""

    sock: socket.socket
    prefix: bytes
    family: str
    txtime: bool


def mac_bytes(mac: str) -> bytes:
    """b'\\x02...' from '02:00:...'; a clear error for anything else."""
    try:
        raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    except ValueError:
        raw = b""
    if len(raw) != 6:
        raise ConfigError(f"invalid MAC address {mac!r}")
    return raw


def ethernet_prefix(dest: Endpoint, src_mac: bytes) -> bytes:
    """Destination, source, optional 802.1Q tag (PCP, VID) and EtherType."""
    if dest.mac is None:
        raise ConfigError("raw Ethernet needs a destination MAC address")
    tag = b""
    if dest.vid is not None or dest.pcp is not None:
        tci = ((dest.pcp or 0) << 13) | (dest.vid or 0)
        tag = struct.pack("!HH", ETH_P_8021Q, tci)
    return mac_bytes(dest.mac) + src_mac + tag + struct.pack("!H", dest.ethertype)


def interface_mac(ifname: str) -> bytes:
    """The MAC address of ``ifname`` in the current network namespace."""
    try:
        with open(f"/sys/class/net/{ifname}/address", encoding="ascii") as fh:
            return mac_bytes(fh.read().strip())
    except OSError:
        pass
    # /sys may show another namespace's view: ask the kernel through the socket itself.
    probe = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        probe.bind((ifname, 0))
        return probe.getsockname()[4][:6]
    except OSError as exc:
        raise CaptureError(f"interface {ifname!r}: {exc.strerror}") from None
    finally:
        probe.close()


def open_sender(dest: Endpoint, *, tos: int | None, so_priority: int | None, txtime: bool,
                echo: bool = False) -> SenderSocket:
    """A socket ready to send the stream to ``dest``, with TX timestamps enabled (and RX ones for ``echo``)."""
    try:
        if dest.family == "packet":
            if not dest.ifname:
                raise ConfigError("raw Ethernet (--l2) needs an interface")
            # Protocol 0: a send-only socket. Bound to the EtherType it would also
            # queue every matching frame it sees (on loopback, its own), fill its
            # receive buffer and leave no room for TX timestamps.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            sock.bind((dest.ifname, 0))
            prefix = ethernet_prefix(dest, interface_mac(dest.ifname))
        else:
            fam = socket.AF_INET6 if dest.family == "inet6" else socket.AF_INET
            sock = socket.socket(fam, socket.SOCK_DGRAM)
            if tos is not None:
                if fam == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TCLASS, tos)
                else:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
            sock.connect((dest.address, dest.port))
            prefix = b""
        if so_priority is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, so_priority)
        if txtime:
            sock.setsockopt(
                socket.SOL_SOCKET, ts.SO_TXTIME, struct.pack("iI", CLOCK_TAI, SOF_TXTIME_REPORT_ERRORS)
            )
        if echo:
            if dest.family == "packet":
                raise ConfigError("round trips (--mode rtt) work over UDP, not raw Ethernet (--l2)")
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE if _root() else socket.SO_RCVBUF, RCVBUF_BYTES)
            sock.setsockopt(socket.SOL_SOCKET, ts.SO_TIMESTAMPING, ts.TX_FLAGS | ts.RX_FLAGS)
        else:
            ts.enable_tx(sock)
    except PermissionError as exc:
        raise CaptureError(f"cannot open the sending socket: {exc.strerror} (raw Ethernet needs root)") from None
    except OSError as exc:
        raise CaptureError(f"cannot open the sending socket to {_where(dest)}: {exc.strerror}") from None
    return SenderSocket(sock, prefix, dest.family, txtime)


SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
RCVBUF_BYTES = 16 << 20


def _large_receive_buffer(sock: socket.socket) -> None:
    """RCVBUF_BYTES of receive buffer, past rmem_max (212 KB by default: a few hundred packets, a stall
    of 0.05-0.2 s of a receiver on a loaded machine or in an emulated guest) with SO_RCVBUFFORCE, which
    needs root; SO_RCVBUF, capped at rmem_max, without."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)


def open_receiver(listen: Endpoint) -> socket.socket:
    """A bound socket that receives the stream with kernel RX timestamps."""
    try:
        if listen.family == "packet":
            if not listen.ifname:
                raise ConfigError("raw Ethernet (--l2) needs an interface to listen on")
            # ETH_P_ALL: frames are seen before the core strips an 802.1Q tag, so
            # the auxiliary data still tells the VID and PCP they arrived with.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
            _large_receive_buffer(sock)
            sock.bind((listen.ifname, ETH_P_ALL))
            sock.setsockopt(ts.SOL_PACKET, PACKET_AUXDATA, 1)
        else:
            fam = socket.AF_INET6 if listen.family == "inet6" else socket.AF_INET
            sock = socket.socket(fam, socket.SOCK_DGRAM)
            _large_receive_buffer(sock)
            sock.bind((listen.address, listen.port))
        ts.enable_rx(sock)
    except PermissionError as exc:
        raise CaptureError(f"cannot open the receiving socket: {exc.strerror} (raw Ethernet needs root)") from None
    except OSError as exc:
        raise CaptureError(f"cannot listen on {_where(listen)}: {exc.strerror}") from None
    return sock


def _root() -> bool:
    import os

    return os.geteuid() == 0


def vlan_of(ancdata: list[tuple[int, int, bytes]]) -> tuple[int, int] | None:
    """(vid, pcp) of a received frame from PACKET_AUXDATA, None when untagged."""
    for level, kind, data in ancdata:
        if level == ts.SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= _AUX.size:
            status, _len, _snap, _mac, _net, tci, _tpid = _AUX.unpack_from(data)
            if status & TP_STATUS_VLAN_VALID:
                return tci & 0x0FFF, tci >> 13
            return None
    return None


def _where(ep: Endpoint) -> str:
    if ep.family == "packet":
        return f"{ep.ifname} (EtherType 0x{ep.ethertype:04x})"
    host = f"[{ep.address}]" if ":" in ep.address else ep.address
    return f"{host}:{ep.port}"
