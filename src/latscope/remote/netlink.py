"""The controller's end of a network agent (`latscope agent` on another host): connect, authenticate, use.

After the handshake (remote.netauth) an ``AgentLink`` is a GuestLink over a
sealed channel: the same requests, worker events and RemoteWorkers as a
guest's, so the session runs a half on another host exactly as it runs a
half in a VM.
"""

from __future__ import annotations

import socket
from typing import Any

from latscope.errors import CaptureError, ConfigError
from latscope.probe.config import parse_hostport
from latscope.remote.channel import Channel, ChannelClosed, ChannelError
from latscope.remote.host import GuestLink
from latscope.remote.netauth import (
    MAX_AUTH_HEADER,
    AuthFailed,
    SealedChannel,
    controller_handshake,
)

AGENT_PORT = 48_501
CONNECT_TIMEOUT_S = 10.0
#: What an agent may send us: its environment in a header, a worker's result files as payloads.
MAX_HEADER = 16 << 20
MAX_PAYLOAD = 1 << 31


class AgentLink(GuestLink):
    """Requests to, and events from, a network agent."""

    GONE = "the agent died or the connection broke"

    def __init__(self, sock: socket.socket, chan: Channel, where: str) -> None:
        self.where = where
        self.PEER = f"agent {where}"
        super().__init__(sock, chan)

    def local_address(self) -> str:
        """Our address on the connection to the agent: where the agent's host reaches this one."""
        return str(self.sock.getsockname()[0])

    def peer_address(self) -> str:
        """The agent's address we connected to."""
        return str(self.sock.getpeername()[0])

    def hello(self) -> dict[str, Any]:
        return dict(self.request("hello", timeout_s=CONNECT_TIMEOUT_S).header)

    def close(self) -> None:
        if not self.closed:
            try:
                self.request("bye", timeout_s=2.0)
            except CaptureError:
                pass
        super().close()


def connect(where: str, key: bytes, timeout_s: float = CONNECT_TIMEOUT_S) -> AgentLink:
    """Connect to the agent at ``HOST[:PORT]`` and prove the key both ways; ConfigError/CaptureError why not."""
    host, port = parse_hostport(where, AGENT_PORT)
    name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        raise CaptureError(f"agent {name}: cannot connect: {exc.strerror or exc}") from None
    try:
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        chan = Channel(sock.fileno(), max_header=MAX_AUTH_HEADER, max_payload=0)
        session = controller_handshake(chan, key, timeout_s)
        sealed = SealedChannel(sock.fileno(), session, role="controller", buf=bytes(chan.buf),
                               max_header=MAX_HEADER, max_payload=MAX_PAYLOAD)
    except AuthFailed as exc:
        sock.close()
        raise ConfigError(f"agent {name}: {exc}") from None
    except (ChannelClosed, ChannelError, OSError) as exc:
        sock.close()
        raise CaptureError(f"agent {name}: the connection broke during authentication ({exc})") from None
    return AgentLink(sock, sealed, name)
