"""Framed messages over a byte stream: a JSON header, optionally followed by binary bytes.

A frame is a 4-byte big-endian header length, the header (UTF-8 JSON object)
and, when the header has ``"bytes": N``, N bytes of payload (a worker's
result files). The stream is a virtio-serial port between host and guest, or
any socket. Only the standard library is used: the guest side must start fast.
Every frame read is stamped with CLOCK_REALTIME at the moment the read that
completed it returned: the clock exchange needs that instant, not the moment
a thread got round to the message.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from dataclasses import dataclass
from typing import Any

MAX_HEADER = 1 << 20
MAX_PAYLOAD = 1 << 30
_LEN = struct.Struct(">I")


class ChannelClosed(Exception):
    """The other side closed the channel (or the guest went away)."""


class ChannelError(Exception):
    """The other side sent something that is not a frame."""


@dataclass(frozen=True)
class Frame:
    """One message: its header, its payload (b"" when none) and when it was read (ns, CLOCK_REALTIME)."""

    header: dict[str, Any]
    payload: bytes
    rx_ns: int


class Channel:
    """Framed messages over a file descriptor (socket or character device)."""

    def __init__(self, fd: int, *, max_header: int = MAX_HEADER, max_payload: int = MAX_PAYLOAD) -> None:
        self.fd = fd
        self.buf = bytearray()
        #: What the other side may send: a network agent takes small requests from strangers.
        self.max_header = max_header
        self.max_payload = max_payload

    def send(self, header: dict[str, Any], payload: bytes = b"") -> int:
        """Write one frame; returns CLOCK_REALTIME just before its first byte was written."""
        if payload:
            header = {**header, "bytes": len(payload)}
        head = json.dumps(header, separators=(",", ":")).encode()
        frame = _LEN.pack(len(head)) + head + payload
        data = memoryview(frame + self._seal(frame))
        t = time.clock_gettime_ns(time.CLOCK_REALTIME)
        while data:
            try:
                n = os.write(self.fd, data)
            except BlockingIOError:
                _wait(self.fd, select.POLLOUT, 1.0)
                continue
            except (BrokenPipeError, ConnectionResetError):
                raise ChannelClosed("the other side went away") from None
            data = data[n:]
        return t

    def recv(self, timeout_s: float | None = None) -> Frame | None:
        """The next frame, or None when ``timeout_s`` passed first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            frame = self._parse()
            if frame is not None:
                return frame
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not _wait(self.fd, select.POLLIN, wait):
                return None
            try:
                chunk = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                chunk = b""
            self.stamp = time.clock_gettime_ns(time.CLOCK_REALTIME)
            if not chunk:
                raise ChannelClosed("the other side closed the channel")
            self.buf += chunk

    stamp = 0

    def _parse(self) -> Frame | None:
        if len(self.buf) < 4:
            return None
        (hlen,) = _LEN.unpack_from(self.buf)
        if hlen == 0 or hlen > self.max_header:
            raise ChannelError(f"frame header of {hlen} bytes (at most {self.max_header})" if hlen
                               else "bad frame header length 0")
        if len(self.buf) < 4 + hlen:
            return None
        try:
            header = json.loads(bytes(self.buf[4:4 + hlen]))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ChannelError(f"frame header is not JSON: {exc}") from None
        if not isinstance(header, dict):
            raise ChannelError("frame header is not a JSON object")
        size = header.get("bytes", 0)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or size > self.max_payload:
            raise ChannelError(f"bad payload size {size!r} (at most {self.max_payload})")
        end = 4 + hlen + size
        if len(self.buf) < end + self.TRAILER:
            return None
        self._verify(bytes(self.buf[:end]), bytes(self.buf[end:end + self.TRAILER]))
        payload = bytes(self.buf[4 + hlen:end])
        del self.buf[:end + self.TRAILER]
        return Frame(header, payload, self.stamp)

    #: Bytes that follow each frame (a sealed channel's MAC, remote.netauth); none here.
    TRAILER = 0

    def _seal(self, frame: bytes) -> bytes:
        """The trailer of an outgoing frame."""
        return b""

    def _verify(self, frame: bytes, trailer: bytes) -> None:
        """Raise ChannelError when an incoming frame's trailer is wrong."""


def _wait(fd: int, events: int, timeout_s: float | None) -> bool:
    """True when ``fd`` is ready for ``events`` within ``timeout_s`` (poll: any fd number, not only < 1024)."""
    poller = select.poll()
    poller.register(fd, events)
    return bool(poller.poll(None if timeout_s is None else int(timeout_s * 1000) + (timeout_s > 0)))
