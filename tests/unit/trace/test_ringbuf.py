"""The ring-buffer page decoder and the binary event table, on pages built by hand to the kernel's ABI."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest

from latscope.errors import FormatError
from latscope.trace import binary, stream
from latscope.trace import ringbuf as rb
from latscope.trace.table import NONE

PAGE = 4096
HEADER_PAGE = """\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;
\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;
\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;
\tfield: char data;\toffset:16;\tsize:4080;\tsigned:0;
"""
COMMON = """\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;
"""
WAKING = f"""name: sched_waking
ID: 375
format:
{COMMON}
\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;
\tfield:int target_cpu;\toffset:32;\tsize:4;\tsigned:1;

print fmt: "comm=%s pid=%d prio=%d target_cpu=%03d", REC->comm, REC->pid, REC->prio, REC->target_cpu
"""
PRINT = f"""name: print
ID: 5
format:
{COMMON}
\tfield:unsigned long ip;\toffset:8;\tsize:8;\tsigned:0;
\tfield:char buf[];\toffset:16;\tsize:0;\tsigned:0;

print fmt: "%ps: %s", (void *)REC->ip, REC->buf
"""
SWITCH = f"""name: sched_switch
ID: 372
format:
{COMMON}
\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prev_prio;\toffset:28;\tsize:4;\tsigned:1;
\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;
\tfield:char next_comm[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;
\tfield:int next_prio;\toffset:60;\tsize:4;\tsigned:1;

print fmt: "prev_comm=%s ..."
"""
KFREE = f"""name: kfree_skb
ID: 2310
format:
{COMMON}
\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:16;\tsize:4;\tsigned:0;
\tfield:__data_loc char[] dev;\toffset:20;\tsize:4;\tsigned:0;

print fmt: "skbaddr=%p reason: %s", REC->skbaddr, __print_symbolic(REC->reason, {{ 2, "NOT_SPECIFIED" }}, {{ 3, "NO_SOCKET" }})
"""
RING = binary.RingMeta(PAGE, HEADER_PAGE, {375: ("sched", WAKING), 5: ("ftrace", PRINT), 372: ("sched", SWITCH),
                                            2310: ("skb", KFREE)}, {42: "worker", 7: "other"})


def word(type_len: int, delta: int) -> bytes:
    return struct.pack("<I", type_len | (delta << 5))


def data(delta: int, payload: bytes) -> bytes:
    """A data event: short ones carry their length in type_len, long ones in the next word."""
    payload = payload + bytes(-len(payload) % 4)
    if len(payload) <= 112:
        return word(len(payload) // 4, delta) + payload
    return word(0, delta) + struct.pack("<I", len(payload) + 4) + payload


def extend(delta: int) -> bytes:
    return word(rb.TYPE_TIME_EXTEND, delta & ((1 << 27) - 1)) + struct.pack("<I", delta >> 27)


def absolute(ts: int) -> bytes:
    ts &= (1 << 59) - 1
    return word(rb.TYPE_TIME_STAMP, ts & ((1 << 27) - 1)) + struct.pack("<I", ts >> 27)


def discarded(length: int, delta: int = 5) -> bytes:
    return word(rb.TYPE_PADDING, delta) + struct.pack("<I", length - 4) + bytes(length - 8)


def page(ts: int, events: bytes, *, commit: int | None = None, missed: int | None = None,
         flags: int = 0) -> np.ndarray:
    n = len(events) if commit is None else commit
    tail = b""
    if missed is not None:
        flags |= rb.MISSED_EVENTS
        if missed > 0:
            flags |= rb.MISSED_STORED
            tail = struct.pack("<Q", missed)
    body = struct.pack("<QQ", ts, n | flags) + events[:n] + tail + events[n + len(tail):]
    return np.frombuffer(body + bytes(PAGE - len(body)), np.uint8).copy()


def waking(pid: int, comm: bytes, prio: int, target: int, *, who: int = 42, flags: int = 0) -> bytes:
    return struct.pack("<HBBi16siii", 375, flags, 0, who, comm, pid, prio, target)


def marker(text: bytes, who: int = 42) -> bytes:
    return struct.pack("<HBBiQ", 5, 0, 0, who, 0xFFFFFFFF81000000) + text + b"\0"


def test_deltas_extends_and_long_events_add_up() -> None:
    ev = (data(100, waking(1, b"a", 120, 0)) + extend(5 << 30) + data(7, waking(2, b"b", 120, 0)) +
          data(3, marker(b"x" * 200)))
    d = rb.decode_pages(np.stack([page(1_000, ev)]))
    assert d.ts.tolist() == [1_100, 1_100 + (5 << 30) + 7, 1_100 + (5 << 30) + 10]
    assert d.length.tolist()[:2] == [36, 36] and d.length[2] >= 217
    assert d.bad_pages == 0 and d.lost.tolist() == [0]


def test_absolute_timestamps_take_their_top_bits_from_the_running_time() -> None:
    # a TAI clock reading (about 1.8e18 ns) is wider than the 59 bits an absolute stamp keeps
    start = 1_796_000_000_123_456_789
    ev = data(10, waking(1, b"a", 1, 0)) + absolute(start + 5_000) + data(4, waking(2, b"b", 1, 0))
    d = rb.decode_pages(np.stack([page(start, ev)]))
    assert d.ts.tolist() == [start + 10, start + 5_004]


def test_discarded_events_are_skipped_without_their_delta_and_null_padding_ends_the_page() -> None:
    ev = (data(10, waking(1, b"a", 1, 0)) + discarded(40, delta=999) + data(5, waking(2, b"b", 1, 0)) +
          word(rb.TYPE_PADDING, 0) + data(1, waking(3, b"c", 1, 0)))
    d = rb.decode_pages(np.stack([page(0, ev)]))
    assert d.ts.tolist() == [10, 15]   # the discarded event's 999 does not count; after the null padding: nothing


def test_a_page_ends_where_its_commit_says() -> None:
    one = data(10, waking(1, b"a", 1, 0))
    ev = one + data(20, waking(2, b"b", 1, 0))
    d = rb.decode_pages(np.stack([page(0, ev, commit=len(one)), page(100, ev)]))
    assert d.ts.tolist() == [10, 110, 130] and d.page.tolist() == [0, 1, 1]
    # an event running past the commit is not read, and the page is counted as bad
    d = rb.decode_pages(np.stack([page(0, ev, commit=len(one) + 8)]))
    assert d.ts.tolist() == [10] and d.bad_pages == 1


def test_lost_events_flags_in_the_commit_field() -> None:
    ev = data(1, waking(1, b"a", 1, 0))
    d = rb.decode_pages(np.stack([page(0, ev, missed=1234), page(0, ev, missed=0), page(0, ev)]))
    assert d.lost.tolist() == [1234, -1, 0]
    assert len(d.ts) == 3   # the count stored after the data is not an event


def test_table_fields_ctx_comm_and_order() -> None:
    p0 = page(1_000, data(0, waking(77, b"kworker/0:1", 120, 1, flags=binary.FLAG_HARDIRQ)) +
              data(50, marker(b"latscope tx seq=17\n")) + data(0, marker(b"hello world\n", who=7)))
    p1 = page(1_000, data(0, waking(5, b"x", 100, 0, who=0, flags=binary.FLAG_SOFTIRQ)) +
              data(50, waking(6, b"y", 100, 0, who=99)))
    t = binary.decode_table(np.stack([p1, p0]), np.array([1, 0], np.int16), RING, comm_fallback=False)
    names = [t.event_names[e] for e in t.event]
    # equal times: CPU 0 before CPU 1, then buffer order
    assert t.ts.tolist() == [1000, 1000, 1050, 1050, 1050]
    assert t.cpu.tolist() == [0, 1, 0, 0, 1]
    assert names == ["sched_waking", "sched_waking", "print", "print", "sched_waking"]
    assert [t.string(c) for c in t.comm] == ["worker", "<idle>", "worker", "other", "<...>"]
    assert bytes(t.ctx).decode() == "hs..."
    assert t.nums[0, :3].tolist() == [77, 120, 1] and t.string(int(t.strs[0, 0])) == "kworker/0:1"
    assert t.nums[2, :2].tolist() == [17, 1]              # latscope marker: seq, phase tx
    assert t.string(int(t.strs[3, 0])) == "hello world"   # anyone else's marker: its text
    assert t.nums[3, 0] == NONE and t.meta["ts_source"] == "binary"


def test_comm_fallback_names_pids_the_kernel_map_lacks() -> None:
    p = page(0, data(1, waking(99, b"late-comer", 120, 0, who=42)) + data(1, waking(1, b"z", 1, 0, who=99)))
    ring = binary.RingMeta(PAGE, HEADER_PAGE, RING.formats, {42: "worker"})
    plain = binary.decode_table(np.stack([p]), np.zeros(1, np.int16), ring, comm_fallback=False)
    named = binary.decode_table(np.stack([p]), np.zeros(1, np.int16), ring)
    assert [plain.string(c) for c in plain.comm] == ["worker", "<...>"]
    assert [named.string(c) for c in named.comm] == ["worker", "late-comer"]


def test_prev_state_and_symbolic_and_dynamic_strings() -> None:
    sw = struct.pack("<HBBi16siiq16sii", 372, 0, 0, 1, b"a", 1, 120, 0x101, b"b", 2, 120)
    name = b"eth0\0"
    kf = struct.pack("<HBBiQIi", 2310, 0, 0, 1, 0xFFFF888812345678, 3, (len(name) << 16) | 24) + name
    kf2 = struct.pack("<HBBiQIi", 2310, 0, 0, 1, 0x10, 77, (len(name) << 16) | 24) + name
    mix = binary.AddressMix(7)
    t = binary.decode_table(np.stack([page(0, data(1, sw) + data(1, kf) + data(1, kf2))]), np.zeros(1, np.int16),
                            RING, addresses=mix)
    assert t.nums[0, 4] == 1 | (1 << 16)                  # "S+" as latscope.trace.fields.state_code reads it
    # kernel pointers are stored mixed with the capture's key, never as the address
    raw = np.array([0xFFFF888812345678, 0x10], np.uint64)
    assert t.nums[1:3, 0].tolist() == mix(raw).tolist()
    assert not np.isin(t.nums[1:3, 0], raw.view(np.int64)).any()
    assert t.string(int(t.strs[1, 0])) == "NO_SOCKET" and t.string(int(t.strs[2, 0])) == "0x4d"


def test_symbolic_tables_are_read_from_the_print_format() -> None:
    tables = binary.symbolic_tables(RING.formats[2310][1], "reason")
    assert tables == [{2: "NOT_SPECIFIED", 3: "NO_SOCKET"}]


def test_ring_file_round_trip_and_refusals(tmp_path: Path) -> None:
    pages = np.stack([page(0, data(1, waking(1, b"a", 1, 0))), page(5, data(1, waking(2, b"b", 1, 0)))])
    sink = stream.PageSink(tmp_path / "ring.zst", PAGE)
    sink.write(1, pages[0].tobytes())
    sink.write(0, pages[1].tobytes())
    sink.close()
    (got, cpus), = list(stream.read_ring(tmp_path / "ring.zst"))
    assert np.array_equal(got, pages) and cpus.tolist() == [1, 0]
    meta = binary.RingMeta.from_json(RING.as_json())
    assert meta.formats == RING.formats and meta.cmdlines == RING.cmdlines
    (tmp_path / "bad.zst").write_bytes(b"not zstd at all")
    with pytest.raises(FormatError):
        list(stream.read_ring(tmp_path / "bad.zst"))


def test_header_page_and_format_parsing() -> None:
    assert rb.parse_header_page(HEADER_PAGE) == rb.PageLayout(0, 8, 8, 16)
    with pytest.raises(FormatError):
        rb.parse_header_page("nothing here")
    f = rb.parse_format(KFREE, "skb")
    assert f.id == 2310 and f["dev"].dynamic and f["skbaddr"].size == 8 and not f["skbaddr"].signed


class _NoPipes:
    """No CPUs to drain: the reader's scheduling alone."""

    def __init__(self) -> None:
        self.fds: dict[int, int] = {}


def test_reader_runs_idle_and_off_the_probe_cpus_when_one_is_spare(tmp_path: Path) -> None:
    import os

    allowed = sorted(os.sched_getaffinity(0))
    sink = stream.PageSink(tmp_path / "ring.zst", PAGE)
    reader = stream.Reader(_NoPipes(), sink, interval_s=0.01, avoid_cpus={allowed[0]})  # type: ignore[arg-type]
    reader.start()
    # An idle-class thread on a busy machine may not have run yet: wait for its first drain, not for time.
    deadline = time.monotonic() + 60
    while reader.stats.drains < 1 and reader.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    reader.finish()
    sink.close()
    assert reader.error is None and reader.stats.drains >= 1
    assert reader.stats.policy == "SCHED_IDLE"
    assert reader.stats.affinity == (allowed[1:] or None)
    # every CPU taken by the probe: nowhere to go, the reader stays where it was
    reader = stream.Reader(_NoPipes(), stream.PageSink(tmp_path / "r2.zst", PAGE), avoid_cpus=set(allowed))  # type: ignore[arg-type]
    reader.start()
    reader.finish()
    reader.sink.close()
    assert reader.stats.affinity is None


def test_address_mix_is_a_keyed_bijection_that_keeps_null_and_the_missing_value() -> None:
    rng = np.random.default_rng(5)
    raw = np.concatenate([rng.integers(0, 1 << 63, 200_000, dtype=np.int64).view(np.uint64) | np.uint64(1 << 63),
                          np.arange(1, 5000, dtype=np.uint64), np.array([0, 1 << 63], np.uint64)])
    a, b = binary.AddressMix(1), binary.AddressMix(2)
    ma, mb = a(raw), b(raw)
    # distinct addresses stay distinct (and equal ones equal), NULL and "no value" stay where they are
    assert len(np.unique(ma)) == len(np.unique(raw)) and a(raw[:10]).tolist() == ma[:10].tolist()
    assert ma[-2] == 0 and ma[-1] == np.iinfo(np.int64).min
    moved = ma[:-2].view(np.uint64) != raw[:-2]
    assert moved.all() and (ma[:-2] != mb[:-2]).mean() > 0.999


def test_pointer_fields_are_found_from_the_format_file() -> None:
    fmt = binary.rb.parse_format("""name: napi_poll
ID: 1
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:struct napi_struct * napi;\toffset:8;\tsize:8;\tsigned:0;
\tfield:__data_loc char[] dev_name;\toffset:16;\tsize:4;\tsigned:0;
\tfield:int work;\toffset:20;\tsize:4;\tsigned:1;
\tfield:const void * skbaddr;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned long rxaddr;\toffset:32;\tsize:8;\tsigned:0;
\tfield:tid_t transaction;\toffset:40;\tsize:4;\tsigned:1;
""")
    assert sorted(n for n, f in fmt.fields.items() if binary.pointer_field(f)) == ["napi", "rxaddr", "skbaddr"]
