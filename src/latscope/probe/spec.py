"""What a sender or receiver worker is told to do: plain frozen records, JSON in and out."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field, fields
from typing import Any

FAMILIES = ("inet", "inet6", "packet")
DEFAULT_PORT = 48_500
#: IEEE 802 local experimental EtherType 1: for protocols that are not registered.
DEFAULT_ETHERTYPE = 0x88B5


@dataclass(frozen=True)
class Endpoint:
    """Where the stream goes: an IP address and port, or an interface and MAC for raw Ethernet."""

    family: str = "inet"
    address: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    ifname: str | None = None
    mac: str | None = None
    ethertype: int = DEFAULT_ETHERTYPE
    vid: int | None = None
    pcp: int | None = None


@dataclass(frozen=True)
class SenderSpec:
    """Everything the sender needs; it runs exactly this and reports what it did."""

    dest: Endpoint
    stream: int
    period_ns: int = 1_000_000
    count: int = 60_000
    size: int = 64
    base_time_ns: int | None = None
    start_delay_ns: int = 200_000_000
    spin_ns: int = 0
    tos: int | None = None
    so_priority: int | None = None
    txtime_offset_ns: int | None = None
    cpu: int | None = None
    prio: int | None = None
    mlock: bool = True
    stream_log: str | None = None
    netns: str | None = None
    trace_marker: str | None = None
    hello: dict[str, Any] | None = None
    hw_timestamps: bool = True
    #: Travels in every packet; a packet without it is not this run's (never 0, which forgeries tend to carry).
    nonce: int = field(default_factory=lambda: secrets.randbits(64) or 1)
    #: Authenticate every packet with the key in this file (see probe/auth.py).
    key_file: str | None = None
    #: Round trips: a reflector answers every packet; read the echoes with kernel RX timestamps.
    echo: bool = False
    #: After the end packet, wait this long at most for the reflector's echo end (the last t3 values).
    echo_wait_ns: int = 1_000_000_000


@dataclass(frozen=True)
class ReceiverSpec:
    """Everything the receiver needs."""

    listen: Endpoint
    stream: int | None = None
    count: int | None = None
    cpu: int | None = None
    prio: int | None = None
    mlock: bool = True
    stream_log: str | None = None
    netns: str | None = None
    trace_marker: str | None = None
    #: Stop when nothing arrived for this long after the first packet.
    idle_timeout_ns: int = 5_000_000_000
    #: Stop when no first packet arrived for this long (0: wait forever).
    first_timeout_ns: int = 0
    #: After the sender's end packet, keep reading late (reordered) packets this long.
    grace_ns: int = 100_000_000
    max_size: int = 65_535
    hw_timestamps: bool = True
    #: The sender's nonce when known in advance; None: taken from the first valid hello.
    nonce: int | None = None
    #: Accept only packets authenticated with the key in this file.
    key_file: str | None = None
    #: Memory the columns may take (None: a quarter of MemAvailable when the receiver starts).
    memory_bytes: int | None = None


@dataclass(frozen=True)
class ReflectorSpec(ReceiverSpec):
    """A receiver that answers every packet of the stream at once with an echo (probe/reflector.py).

    Same fields as a receiver: it listens, validates (stream, nonce, MAC, seq) and stops like one.
    """


ROLES = ("sender", "receiver", "reflector")
Spec = SenderSpec | ReceiverSpec


def to_json(spec: SenderSpec | ReceiverSpec) -> dict[str, Any]:
    """A JSON-ready dict of a spec (Endpoint nested)."""
    return asdict(spec)


def sender_from_json(doc: dict[str, Any]) -> SenderSpec:
    """Inverse of to_json for a SenderSpec."""
    return _build(SenderSpec, doc, "dest")


def receiver_from_json(doc: dict[str, Any]) -> ReceiverSpec:
    """Inverse of to_json for a ReceiverSpec."""
    return _build(ReceiverSpec, doc, "listen")


def reflector_from_json(doc: dict[str, Any]) -> ReflectorSpec:
    """Inverse of to_json for a ReflectorSpec."""
    return _build(ReflectorSpec, doc, "listen")


def spec_from_json(role: str, doc: dict[str, Any]) -> SenderSpec | ReceiverSpec:
    """The spec of worker ``role`` (one of ROLES) from its JSON; ValueError for an unknown role."""
    if role == "sender":
        return sender_from_json(doc)
    if role == "receiver":
        return receiver_from_json(doc)
    if role == "reflector":
        return reflector_from_json(doc)
    raise ValueError(f"unknown worker role {role!r}")


def _build(cls: type, doc: dict[str, Any], endpoint_key: str) -> Any:
    known = {f.name for f in fields(cls)}
    values = {k: v for k, v in doc.items() if k in known}
    values[endpoint_key] = Endpoint(**doc[endpoint_key])
    return cls(**values)
