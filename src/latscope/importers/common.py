"""What every importer shares: reading the file, and turning partial timestamps into contract columns.

Importers fill only the timestamps their tool really has; everything else
stays null (``MISSING``). Loss, reordering and the completeness counts are
derived here the same way for every tool, so an imported run answers
`show`, `compare` and `check` exactly like a measured one.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from latscope.errors import FormatError, NotFoundError
from latscope.files import open_regular, reason
from latscope.store.runfile import COMPLETENESS_KEYS
from latscope.store.samples import FLAG_LOST, FLAG_REORDERED, MISSING, TIME_COLUMNS

_GZIP_MAGIC = b"\x1f\x8b"
#: How much of a file is read to recognise its format before anything else is done with it.
SNIFF_BYTES = 64 << 10
_CHUNK = 1 << 20
#: Formats parsed from memory (irtt's JSON, sockperf's text, isochron's log) may take this share of the
#: memory available: Python's JSON objects take about ten times the text.
MEMORY_SHARE = 8

Sniffer = Callable[[bytes, bool, Path], None]


@dataclass(frozen=True)
class RawFile:
    """An import file: what identifies it, its first bytes, and its content (gunzipped when it was gzip).

    The content is read when a parser asks for it (`open` streams it, `data`
    holds it whole), after the format was recognised from ``head`` and the
    file was hashed in one bounded pass.
    """

    path: Path
    sha256: str
    size: int
    gzipped: bool
    #: The first SNIFF_BYTES of the content.
    head: bytes
    #: Bytes and newlines of the whole content.
    content_size: int
    lines: int
    #: The content, for a RawFile made from bytes in memory (`of_bytes`).
    memory: bytes | None = field(default=None, repr=False)

    @classmethod
    def of_bytes(cls, path: Path, data: bytes, *, size: int | None = None, gzipped: bool = False) -> RawFile:
        """A RawFile of ``data`` already in memory (tests, and contents that never were a file)."""
        return cls(Path(path), hashlib.sha256(data).hexdigest(), len(data) if size is None else size, gzipped,
                   data[:SNIFF_BYTES], len(data), data.count(b"\n"), data)

    def provenance(self) -> dict[str, Any]:
        """The part of run.json ``source`` that identifies the original file."""
        return {"file": str(self.path), "file_size": self.size, "file_sha256": self.sha256,
                **({"gzipped": True} if self.gzipped else {})}

    def open(self) -> BinaryIO:
        """The content as a stream from its start (gunzipped on the fly)."""
        if self.memory is not None:
            return io.BytesIO(self.memory)
        fh = _open(self.path)
        return gzip.GzipFile(fileobj=fh, mode="rb") if self.gzipped else fh  # type: ignore[return-value]

    @functools.cached_property
    def data(self) -> bytes:
        """The whole content; FormatError when it is too large to hold in the memory available."""
        if self.memory is not None:
            return self.memory
        limit = _available_memory() // MEMORY_SHARE
        if limit and self.content_size > limit:
            raise FormatError(f"{self.path}: {self.content_size} bytes of content is more than this machine can "
                              f"parse in memory now (about {limit} bytes)")
        with self.open() as fh:
            return fh.read()


def read_file(path: str | Path, sniff: Sniffer | None = None) -> RawFile:
    """Recognise ``path`` from its first bytes with ``sniff``, then hash it and count its lines in one pass.

    Only a regular file is read (a FIFO or a device would never end), gzip is
    undone transparently (irtt writes .json.gz by default), and a file of the
    wrong kind is refused after SNIFF_BYTES, not after reading it whole.
    ``sniff(head, complete, path)`` raises FormatError; ``complete`` says
    whether ``head`` is the whole content.
    """
    p = Path(path)
    fh = _open(p)
    with fh:
        first = fh.read(2)
        fh.seek(0)
        gz = first == _GZIP_MAGIC
        stream: BinaryIO = gzip.GzipFile(fileobj=fh, mode="rb") if gz else fh  # type: ignore[assignment]
        try:
            head = stream.read(SNIFF_BYTES)
            if not head or (head.isspace() and len(head) < SNIFF_BYTES):
                raise FormatError(f"{p}: file is empty")
            if sniff is not None:
                sniff(head, len(head) < SNIFF_BYTES, p)
            # The sniffed file is read once more for its checksum and line count, a chunk at a time.
            fh.seek(0)
            digest = hashlib.sha256()
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
            size = fh.tell()
            fh.seek(0)
            content = gzip.GzipFile(fileobj=fh, mode="rb") if gz else fh
            lines = total = 0
            while chunk := content.read(_CHUNK):
                lines += chunk.count(b"\n")
                total += len(chunk)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise FormatError(f"{p}: corrupt or truncated gzip data ({exc})") from None
        except OSError as exc:
            raise FormatError(f"{p}: cannot read ({reason(exc)})") from None
    return RawFile(p, digest.hexdigest(), size, gz, head, total, lines)


def _open(p: Path) -> BinaryIO:
    try:
        fh, _size = open_regular(p)
    except FileNotFoundError:
        raise NotFoundError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise FormatError(f"{p}: is a directory, not a file") from None
    except OSError as exc:
        raise FormatError(f"{p}: cannot read ({reason(exc)})") from None
    return fh


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return 0


def text_head(head: bytes, complete: bool, where: Path, what: str) -> str:
    """``head`` as text for a sniffer: FormatError for binary data (NUL bytes, invalid UTF-8)."""
    nul = head.find(b"\0")
    if nul >= 0:
        raise FormatError(f"{where}: not {what} (binary data: byte {nul} is NUL)")
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A character cut by the end of the head is not an error.
        if complete or exc.start < len(head) - 3:
            raise FormatError(f"{where}: not {what} (byte {exc.start} is not UTF-8)") from None
        return head[:exc.start].decode("utf-8")


def text_of(raw: RawFile) -> str:
    """The file as text; import files are ASCII in practice, UTF-8 is accepted."""
    try:
        return raw.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{raw.path}: not a text file (byte {exc.start} is not UTF-8)") from None


@dataclass(frozen=True)
class Imported:
    """A parsed import: contract columns plus everything run.json should say about them."""

    columns: dict[str, np.ndarray]
    counts: dict[str, int]
    source: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    #: When the measurement started (UTC ISO 8601), where the file says.
    started: str | None = None


def null_column(n: int) -> np.ndarray:
    """A timestamp column of ``n`` nulls."""
    return np.full(n, MISSING, dtype=np.int64)


def reordered_mask(seq: np.ndarray, arrival: np.ndarray) -> np.ndarray:
    """Packets that arrived after a packet with a higher seq: latscope's receiver rule, after the fact.

    The receiver flags a packet when its seq is below the highest seq seen so
    far; replaying arrivals in time order (ties in row order) gives the same set.
    """
    out = np.zeros(len(seq), dtype=bool)
    ok = arrival != MISSING
    if ok.all():  # no copies in the common case of nothing lost
        got, arrived, seq_got = np.arange(len(seq)), arrival, seq
    else:
        got = np.flatnonzero(ok)
        arrived, seq_got = arrival[got], seq[got]
    if len(got) < 2:
        return out
    if np.all(arrived[1:] >= arrived[:-1]) and np.all(seq_got[1:] >= seq_got[:-1]):
        return out  # arrival order is row order and seq only grows: nothing overtook
    order = got[np.argsort(arrived, kind="stable")]
    s = seq[order]
    highest_before = np.maximum.accumulate(np.concatenate(([np.iinfo(np.int64).min], s[:-1])))
    out[order[s < highest_before]] = True
    return out


def build(
    seq: np.ndarray,
    times: dict[str, np.ndarray],
    *,
    stream: np.ndarray | int = 0,
    extra_flags: np.ndarray | None = None,
    arrival: str | None = None,
    duplicated: int = 0,
    tx_recorded: bool = True,
    untimed: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Contract columns and completeness counts from whatever timestamps a tool has.

    A packet is received when it has a receive timestamp (rx_hw, rx_sw or
    rx_user) and lost otherwise. ``arrival`` names the column whose order is
    the arrival order, for the reordering flags. ``tx_recorded`` False means
    the tool never records transmit timestamps, so their absence is not
    counted as missing. ``untimed`` marks rows the tool knows arrived without
    knowing when: not lost, counted as received with a missing rx timestamp.
    """
    n = len(seq)
    cols: dict[str, np.ndarray] = {"seq": np.asarray(seq, dtype=np.int64)}
    # One read-only null column serves every absent timestamp: on a 10-million
    # packet import that is 80 MB instead of 80 MB per missing column.
    shared_null = null_column(n)
    shared_null.flags.writeable = False
    cols["stream"] = (np.full(n, stream, dtype=np.int32) if np.isscalar(stream)
                      else np.asarray(stream, dtype=np.int32))
    for name in TIME_COLUMNS:
        col = times.get(name)
        cols[name] = shared_null if col is None else np.asarray(col, dtype=np.int64)
        if len(cols[name]) != n:
            raise ValueError(f"column {name} has {len(cols[name])} rows, expected {n}")
    flags = np.zeros(n, dtype=np.int32) if extra_flags is None else np.asarray(extra_flags, dtype=np.int32).copy()
    has_rx = (cols["rx_hw_ns"] != MISSING) | (cols["rx_sw_ns"] != MISSING)
    received = has_rx | (cols["rx_user_ns"] != MISSING)
    arrived_untimed = np.zeros(n, dtype=bool) if untimed is None else np.asarray(untimed, dtype=bool) & ~received
    flags[~received & ~arrived_untimed] |= FLAG_LOST
    if arrival is not None:
        if arrival != "rx_best":
            order_by = cols[arrival]
        elif cols["rx_hw_ns"] is shared_null:
            order_by = cols["rx_sw_ns"]
        else:
            order_by = np.where(cols["rx_hw_ns"] != MISSING, cols["rx_hw_ns"], cols["rx_sw_ns"])
        flags[reordered_mask(cols["seq"], order_by)] |= FLAG_REORDERED
    cols["flags"] = flags
    has_tx = (cols["tx_sw_ns"] != MISSING) | (cols["tx_hw_ns"] != MISSING)
    counts = dict.fromkeys(COMPLETENESS_KEYS, 0)
    counts.update({
        "sent": n,
        "received": int(np.count_nonzero(received | arrived_untimed)),
        "lost": int(np.count_nonzero(flags & FLAG_LOST)),
        "duplicated": int(duplicated),
        "reordered": int(np.count_nonzero(flags & FLAG_REORDERED)),
        "missing_tx_timestamps": int(np.count_nonzero(~has_tx)) if tx_recorded else 0,
        "missing_rx_timestamps": int(np.count_nonzero((received & ~has_rx) | arrived_untimed)),
    })
    return cols, counts


def parse_decimal_ns(text: str, scale_digits: int = 9) -> int:
    """'2.403062896' seconds -> 2403062896 ns, exactly (floats lose the last digits of epoch times)."""
    t = text.strip()
    neg = t.startswith("-")
    whole, _, frac = t.lstrip("+-").partition(".")
    if not (whole.isdigit() or (whole == "" and frac)) or (frac and not frac.isdigit()):
        raise ValueError(f"not a decimal number: {text!r}")
    frac = (frac + "0" * scale_digits)[:scale_digits]
    value = int(whole or "0") * 10**scale_digits + int(frac or "0")
    return -value if neg else value
