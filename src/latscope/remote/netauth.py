"""Who may talk to a network agent: a challenge-response on the pre-shared key, then every frame sealed.

The handshake (docs/agent.md has the picture):

1. agent -> controller: ``{"op": "challenge", "proto": PROTO, "nonce": Na}``;
2. controller -> agent: ``{"op": "auth", "nonce": Nc, "mac": HMAC(K, "controller" | Na | Nc)}``;
3. agent -> controller: ``{"ok": true, "mac": HMAC(K, "agent" | Na | Nc)}``.

Both nonces are 32 random bytes, fresh on every connection, so each side
proves it holds K for *this* connection: an answer recorded on another
connection was made for another Na (the agent also remembers the Nc it has
seen and names a repeated one a replay), and a fake agent replaying an old
step 3 fails on the controller's fresh Nc. The labels keep one side's proof
from being reflected as the other's. The key itself never crosses the wire.

After the handshake both sides derive a session key
``HMAC(K, "session" | Na | Nc)`` and every frame carries a MAC over its
bytes and its position in the stream, per direction: a frame injected,
altered, dropped, repeated or moved by someone on the path ends the
connection. Frames are not encrypted: samples and environments can be read
on the path (they are not secret); the key cannot.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
import threading
from collections import OrderedDict
from typing import Any

from latscope.remote.channel import Channel, ChannelError

PROTO = "latscope-agent/1"
NONCE_BYTES = 32
MAC_BYTES = 32
#: Client nonces an agent remembers to name a replay (older ones fail the MAC anyway: Na was another).
SEEN_NONCES = 65_536
#: Before authentication a peer may send this much per frame, and no payload.
MAX_AUTH_HEADER = 1024
_SEQ = struct.Struct(">Q")


class AuthFailed(Exception):
    """The other side did not prove the key (or broke the protocol); the message is the one-line reason."""


def _mac(key: bytes, label: str, *parts: bytes) -> bytes:
    return hmac.new(key, label.encode() + b"\0" + b"".join(parts), hashlib.sha256).digest()


def _hex_field(header: dict[str, Any], name: str, size: int) -> bytes:
    value = header.get(name)
    if not isinstance(value, str) or len(value) != 2 * size:
        raise AuthFailed(f"malformed {name!r} in the handshake")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise AuthFailed(f"malformed {name!r} in the handshake") from None


class SeenNonces:
    """The controllers' nonces an agent has accepted, newest last, bounded (thread-safe)."""

    def __init__(self, limit: int = SEEN_NONCES) -> None:
        self.limit = limit
        self.seen: OrderedDict[bytes, None] = OrderedDict()
        self.lock = threading.Lock()

    def add(self, nonce: bytes) -> bool:
        """Remember ``nonce``; False when it was seen before."""
        with self.lock:
            if nonce in self.seen:
                return False
            self.seen[nonce] = None
            while len(self.seen) > self.limit:
                self.seen.popitem(last=False)
            return True


def agent_handshake(chan: Channel, key: bytes, seen: SeenNonces, timeout_s: float) -> bytes:
    """The agent's side; the session key, or AuthFailed with the reason to log."""
    na = secrets.token_bytes(NONCE_BYTES)
    chan.send({"op": "challenge", "proto": PROTO, "nonce": na.hex()})
    frame = chan.recv(timeout_s)
    if frame is None:
        raise AuthFailed(f"no answer to the challenge within {timeout_s:g} s")
    h = frame.header
    if h.get("op") != "auth" or frame.payload:
        raise AuthFailed(f"expected the answer to the challenge, got {str(h.get('op'))[:40]!r}")
    nc = _hex_field(h, "nonce", NONCE_BYTES)
    mac = _hex_field(h, "mac", MAC_BYTES)
    if not hmac.compare_digest(mac, _mac(key, "controller", na, nc)):
        if not seen.add(nc):
            raise AuthFailed("replayed answer (its nonce was used before)")
        raise AuthFailed("wrong key (the answer to the challenge does not match)")
    if not seen.add(nc):
        # A correct MAC over our fresh Na with an old Nc: only a key holder can make it; still refused.
        raise AuthFailed("replayed nonce")
    chan.send({"ok": True, "proto": PROTO, "mac": _mac(key, "agent", na, nc).hex()})
    return _mac(key, "session", na, nc)


def controller_handshake(chan: Channel, key: bytes, timeout_s: float) -> bytes:
    """The controller's side; the session key, or AuthFailed."""
    frame = chan.recv(timeout_s)
    if frame is None:
        raise AuthFailed(f"no challenge within {timeout_s:g} s (is it a latscope agent?)")
    h = frame.header
    if h.get("op") != "challenge":
        raise AuthFailed(f"refused before authentication: {str(h.get('error') or h.get('op'))[:200]}")
    if h.get("proto") != PROTO:
        raise AuthFailed(f"speaks {str(h.get('proto'))[:40]!r}, not {PROTO} (another latscope version?)")
    na = _hex_field(h, "nonce", NONCE_BYTES)
    nc = secrets.token_bytes(NONCE_BYTES)
    chan.send({"op": "auth", "nonce": nc.hex(), "mac": _mac(key, "controller", na, nc).hex()})
    frame = chan.recv(timeout_s)
    if frame is None:
        raise AuthFailed(f"no answer to the authentication within {timeout_s:g} s")
    if not frame.header.get("ok"):
        raise AuthFailed(f"refused: {str(frame.header.get('error'))[:200]}")
    mac = _hex_field(frame.header, "mac", MAC_BYTES)
    if not hmac.compare_digest(mac, _mac(key, "agent", na, nc)):
        raise AuthFailed("the agent did not prove it holds the key (wrong key there, or not our agent)")
    return _mac(key, "session", na, nc)


class SealedChannel(Channel):
    """A channel whose frames carry HMAC-SHA256(session key, direction | sequence number | frame)."""

    TRAILER = MAC_BYTES

    def __init__(self, fd: int, session_key: bytes, *, role: str, buf: bytes = b"",
                 max_header: int, max_payload: int) -> None:
        super().__init__(fd, max_header=max_header, max_payload=max_payload)
        self.key = session_key
        self.out_label = role
        self.in_label = "controller" if role == "agent" else "agent"
        self.out_seq = 0
        self.in_seq = 0
        self.buf += buf

    def _seal(self, frame: bytes) -> bytes:
        mac = _mac(self.key, self.out_label, _SEQ.pack(self.out_seq), frame)
        self.out_seq += 1
        return mac

    def _verify(self, frame: bytes, trailer: bytes) -> None:
        want = _mac(self.key, self.in_label, _SEQ.pack(self.in_seq), frame)
        if not hmac.compare_digest(want, trailer):
            raise ChannelError("a frame failed its MAC (altered, injected or replayed on the way)")
        self.in_seq += 1
