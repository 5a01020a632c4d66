"""The ethtool ioctls latscope needs: driver name, timestamping capabilities, TX checksum offload."""

from __future__ import annotations

import ctypes
import fcntl
import socket
import struct
from typing import Any

SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 0x00000003
ETHTOOL_GET_TS_INFO = 0x00000041
ETHTOOL_GTXCSUM, ETHTOOL_STXCSUM = 0x00000016, 0x00000017

_TS_FLAGS = {
    "tx_hardware": 1 << 0,
    "tx_software": 1 << 1,
    "rx_hardware": 1 << 2,
    "rx_software": 1 << 3,
    "software": 1 << 4,
    "raw_hardware": 1 << 6,
}


def _ioctl(sock: socket.socket, ifname: str, payload: ctypes.Array) -> bool:
    ifreq = struct.pack("16sP", ifname.encode()[:15], ctypes.addressof(payload))
    try:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    except OSError:
        return False
    return True


def tx_checksum(sock: socket.socket, ifname: str) -> bool | None:
    """Whether ``ifname`` leaves TX checksums to the device (offload), None when it does not say."""
    buf = (ctypes.c_char * 8)()
    struct.pack_into("I", buf, 0, ETHTOOL_GTXCSUM)
    if not _ioctl(sock, ifname, buf):
        return None
    return bool(struct.unpack_from("I", buf, 4)[0])


def set_tx_checksum(sock: socket.socket, ifname: str, on: bool) -> None:
    """Switch TX checksum offload of ``ifname`` (``ethtool -K IF tx on|off``); OSError when refused."""
    buf = (ctypes.c_char * 8)()
    struct.pack_into("II", buf, 0, ETHTOOL_STXCSUM, int(on))
    ifreq = struct.pack("16sP", ifname.encode()[:15], ctypes.addressof(buf))
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)


def driver(sock: socket.socket, ifname: str) -> str | None:
    """The driver name (e.g. 'veth', 'e1000e'), None when the device does not say."""
    buf = (ctypes.c_char * 196)()
    struct.pack_into("I", buf, 0, ETHTOOL_GDRVINFO)
    if not _ioctl(sock, ifname, buf):
        return None
    name = buf.raw[4:36].split(b"\0", 1)[0].decode(errors="replace")
    return name or None


def timestamping(sock: socket.socket, ifname: str) -> dict[str, Any] | None:
    """SO_TIMESTAMPING capabilities and PHC index (-1: no PTP clock) of ``ifname``."""
    buf = (ctypes.c_char * 44)()
    struct.pack_into("I", buf, 0, ETHTOOL_GET_TS_INFO)
    if not _ioctl(sock, ifname, buf):
        return None
    _cmd, caps, phc, tx_types = struct.unpack_from("IIiI", buf, 0)
    rx_filters = struct.unpack_from("I", buf, 28)[0]
    out: dict[str, Any] = {k: bool(caps & bit) for k, bit in _TS_FLAGS.items()}
    out.update(phc_index=phc, tx_types=tx_types, rx_filters=rx_filters)
    out["hardware"] = out["tx_hardware"] and out["rx_hardware"] and out["raw_hardware"]
    return out


SIOCSHWTSTAMP = 0x89B0
SIOCGHWTSTAMP = 0x89B1
HWTSTAMP_TX_OFF, HWTSTAMP_TX_ON = 0, 1
HWTSTAMP_FILTER_NONE, HWTSTAMP_FILTER_ALL = 0, 1


def _hwtstamp_ioctl(sock: socket.socket, ifname: str, request: int, config: tuple[int, int, int]) -> tuple[int, int]:
    buf = (ctypes.c_char * 12)()
    struct.pack_into("iii", buf, 0, *config)
    ifreq = struct.pack("16sP", ifname.encode()[:15], ctypes.addressof(buf))
    fcntl.ioctl(sock.fileno(), request, ifreq)
    _flags, tx_type, rx_filter = struct.unpack_from("iii", buf, 0)
    return tx_type, rx_filter


def hwtstamp_get(sock: socket.socket, ifname: str) -> tuple[int, int]:
    """(tx_type, rx_filter) currently set on the NIC; OSError where the driver has none."""
    return _hwtstamp_ioctl(sock, ifname, SIOCGHWTSTAMP, (0, 0, 0))


def hwtstamp_set(sock: socket.socket, ifname: str, tx_type: int, rx_filter: int) -> tuple[int, int]:
    """Set hardware timestamping; returns what the driver actually applied (it may widen the filter)."""
    return _hwtstamp_ioctl(sock, ifname, SIOCSHWTSTAMP, (0, tx_type, rx_filter))
