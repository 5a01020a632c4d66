"""The agent handshake and sealed frames (remote.netauth), both sides' real code over a socketpair."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from latscope.remote.channel import Channel, ChannelError
from latscope.remote.netauth import (
    AuthFailed,
    SealedChannel,
    SeenNonces,
    agent_handshake,
    controller_handshake,
)


def handshake(agent_key: bytes, controller_key: bytes, seen: SeenNonces | None = None):
    """Run both sides; (agent's result or exception, controller's result or exception, the sockets)."""
    x, y = socket.socketpair()
    box: dict[str, Any] = {}

    def agent() -> None:
        try:
            box["agent"] = agent_handshake(Channel(x.fileno()), agent_key, seen or SeenNonces(), 5)
        except AuthFailed as exc:
            box["agent"] = exc
            Channel(x.fileno()).send({"ok": False, "error": "authentication failed"})

    t = threading.Thread(target=agent)
    t.start()
    try:
        mine: Any = controller_handshake(Channel(y.fileno()), controller_key, 5)
    except AuthFailed as exc:
        mine = exc
    t.join()
    return box["agent"], mine, x, y


def test_same_key_gives_one_session_key_and_sealed_frames_pass() -> None:
    """Both sides derive the same session key; a sealed frame arrives intact."""
    agent, mine, x, y = handshake(b"secret", b"secret")
    assert isinstance(agent, bytes) and agent == mine
    a = SealedChannel(x.fileno(), agent, role="agent", max_header=1024, max_payload=0)
    c = SealedChannel(y.fileno(), mine, role="controller", max_header=1024, max_payload=0)
    c.send({"op": "hello", "id": 1})
    frame = a.recv(5)
    assert frame is not None and frame.header == {"op": "hello", "id": 1}
    a.send({"re": 1, "ok": True})
    back = c.recv(5)
    assert back is not None and back.header == {"re": 1, "ok": True}


def test_wrong_key_fails_on_both_sides() -> None:
    """The agent names a wrong key; the controller is told authentication failed; the keys differ per run."""
    agent, mine, _x, _y = handshake(b"secret", b"other")
    assert isinstance(agent, AuthFailed) and "wrong key" in str(agent)
    assert isinstance(mine, AuthFailed) and "authentication failed" in str(mine)


def test_session_keys_are_fresh_per_connection() -> None:
    """Two connections with the same key: two different session keys (fresh nonces on both sides)."""
    first, _m, _x, _y = handshake(b"k", b"k")
    second, _m2, _x2, _y2 = handshake(b"k", b"k")
    assert first != second


def test_a_repeated_frame_fails_its_mac() -> None:
    """The same frame sent twice (a replay inside the connection) fails: the sequence number moved on."""
    agent, mine, x, y = handshake(b"k", b"k")
    a = SealedChannel(x.fileno(), agent, role="agent", max_header=1024, max_payload=0)
    c1 = SealedChannel(y.fileno(), mine, role="controller", max_header=1024, max_payload=0)
    c2 = SealedChannel(y.fileno(), mine, role="controller", max_header=1024, max_payload=0)
    c1.send({"op": "hello", "id": 1})
    c2.send({"op": "hello", "id": 1})  # byte for byte what c1 sent: sequence 0 again
    assert a.recv(5) is not None
    with pytest.raises(ChannelError, match="failed its MAC"):
        a.recv(5)


def test_an_agent_frame_is_not_taken_as_the_controllers() -> None:
    """A frame sealed for one direction is refused in the other (the labels differ)."""
    agent, _mine, x, y = handshake(b"k", b"k")
    reflected = SealedChannel(y.fileno(), agent, role="agent", max_header=1024, max_payload=0)
    a = SealedChannel(x.fileno(), agent, role="agent", max_header=1024, max_payload=0)
    reflected.send({"op": "hello", "id": 1})
    with pytest.raises(ChannelError, match="failed its MAC"):
        a.recv(5)


def test_seen_nonces_are_bounded() -> None:
    """The replay memory keeps the newest nonces only, and names a repeat."""
    seen = SeenNonces(limit=3)
    assert all(seen.add(bytes([i])) for i in range(5))
    assert not seen.add(bytes([4]))
    assert seen.add(bytes([0]))  # forgotten: the MAC over a fresh challenge refuses it anyway
    assert len(seen.seen) == 3
