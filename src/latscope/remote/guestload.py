"""A bounded disk writer in the guest: the seed's "block I/O activity on the guest VM", on demand.

The agent starts it (request ``load_start``) in the guest's working directory
(--vm-cwd: a virtio-blk disk with ext2/ext4, 9p or tmpfs) and ends it
(``load_stop``, or when it powers off). It writes ``block`` bytes at a time
and syncs every ``sync_every`` blocks, as a logging application would, at
most ``rate`` bytes a second (0: as fast as it can; a paced writer is still
writing when the stream starts, after the guest's slow worker start-up), and
stops by itself after ``max_bytes`` or ``max_s`` seconds, whichever comes
first; its file is removed when it ends. Run as
``python -m latscope.remote.guestload DIR MAX_BYTES MAX_S BLOCK SYNC_EVERY [RATE]``.

``GuestDiskLoad`` is the host's handle on it: a Capture (latscope.session)
that starts the writer before a run's workers and ends it after them.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latscope.errors import LatscopeError

FILE = "latscope-load.bin"
MAX_BYTES = 1 << 30
MAX_S = 600.0
WRAP_BYTES = 64 << 20


def write_bounded(directory: Path, max_bytes: int, max_s: float, block: int, sync_every: int,
                  rate: int = 0) -> int:
    """Write until a bound is reached (or SIGTERM); return the bytes written. The file is removed."""
    max_bytes, max_s = min(max_bytes, MAX_BYTES), min(max_s, MAX_S)
    stop = False

    def _term(_sig, _frm) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _term)
    path = directory / FILE
    buf = os.urandom(max(512, min(block, 1 << 20)))
    written = 0
    started = time.monotonic()
    deadline = started + max_s
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        n = pos = 0
        while not stop and written < max_bytes and time.monotonic() < deadline:
            k = os.write(fd, buf)
            written, pos, n = written + k, pos + k, n + 1
            if n % max(1, sync_every) == 0:
                os.fsync(fd)
                if rate > 0:
                    ahead = written / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(min(ahead, max(0.0, deadline - time.monotonic())))
            if pos >= WRAP_BYTES:
                # Start again at the front: the file stays small, the disk keeps being written.
                os.lseek(fd, 0, os.SEEK_SET)
                pos = 0
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return written


@dataclass
class GuestDiskLoad:
    """Runs the bounded writer in a VM's guest while a run measures (nothing on other topologies)."""

    max_bytes: int = 256 << 20
    max_s: float = 120.0
    block: int = 1 << 16
    sync_every: int = 16
    rate: int = 0
    link: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    def start(self, workdir: Path, path: Any) -> dict[str, Any]:
        guest = getattr(path, "guest", None)
        if guest is None:
            return {}
        ans = guest.link.request("load_start", max_bytes=self.max_bytes, max_s=self.max_s, block=self.block,
                                 sync_every=self.sync_every, rate=self.rate).header
        self.link = guest.link
        self.info = {"kind": "disk writer", "directory": guest.cwd.get("path"), "cwd": guest.cwd.get("kind"),
                     "max_bytes": self.max_bytes, "max_s": self.max_s, "block": self.block,
                     "sync_every": self.sync_every, "rate": self.rate, "pid": ans.get("pid")}
        return {}

    def stop(self, workdir: Path) -> dict[str, Any]:
        if self.link is None:
            return {"record": {}, "completeness": {}}
        info = dict(self.info)
        try:
            ans = self.link.request("load_stop", timeout_s=60).header
            info["exit_code"], info["written_bytes"] = ans.get("code"), ans.get("written")
        except LatscopeError as exc:  # the run is kept; the record says what happened
            info["error"] = str(exc)
        self.link = None
        return {"record": {"guest_load": info}, "completeness": {}}

    def close(self) -> None:
        link, self.link = self.link, None
        if link is not None and not link.closed:
            try:
                link.request("load_stop", timeout_s=60)
            except LatscopeError:
                # the guest powers off at the end of the topology anyway
                pass


def main(argv: list[str]) -> int:
    directory, max_bytes, max_s, block, sync_every, *rest = argv
    done = write_bounded(Path(directory), int(max_bytes), float(max_s), int(block), int(sync_every),
                         int(rest[0]) if rest else 0)
    print(f"written {done}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
