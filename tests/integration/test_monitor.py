"""`latscope monitor` on veth: interval files, SIGTERM, restart, kill -9, the /metrics endpoint and --max.

Every wait is for a real sign (a committed file, a temporary file, the test-only hold after the last
file), bounded in time; nothing depends on how fast this machine is.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from latscope.contract import FLAG_DUPLICATE, FLAG_LOST, FLAG_REORDERED, MISSING
from latscope.monitor.histogram import PROM_BOUNDS_NS
from latscope.store.partitions import INTERVAL_SCHEMA, MONITOR_SCHEMA
from tests.conftest import BIN
from tests.integration.netutil import namespaces_of

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(240)]

INTERVAL_S = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Monitor:
    """A `latscope monitor` process under test."""

    def __init__(self, directory: Path, *args: str, hold: Path | None = None) -> None:
        env = dict(os.environ)
        if hold is not None:
            hold.mkdir(exist_ok=True)
            env["LATSCOPE_TEST_HOLD"] = f"monitor-stored:{hold}"
        self.dir = directory
        self.proc = subprocess.Popen([str(BIN / "latscope"), "monitor", str(directory), "--interval",
                                      f"{INTERVAL_S}s", *args], env=env, text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.err = ""

    def wait(self, what, text: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not what():
            if self.proc.poll() is not None:
                raise AssertionError(f"monitor ended before {text}: {self.proc.returncode} {self.proc.stderr.read()}")
            assert time.monotonic() < deadline, f"never reached: {text}"
            time.sleep(0.05)

    def wait_files(self, n: int) -> None:
        before = len(samples_files(self.dir))
        self.wait(lambda: len(samples_files(self.dir)) >= before + n, f"{n} more files", 20 + 3 * INTERVAL_S * n)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        _out, self.err = self.proc.communicate(timeout=60)
        return self.proc.returncode


def samples_files(d: Path) -> list[Path]:
    return sorted(d.glob("samples/host=*/date=*/hour=*/*.parquet"))


def stored(d: Path) -> dict[str, np.ndarray]:
    """Every stored row, in seq order, with the file each came from."""
    parts = []
    for i, f in enumerate(samples_files(d)):
        t = pq.read_table(f)
        assert t.schema.remove_metadata() == MONITOR_SCHEMA.remove_metadata(), f
        cols = {c: pc.fill_null(t.column(c), MISSING).to_numpy() for c in ("send_ns", "rx_sw_ns", "rx_hw_ns",
                                                                           "rx_user_ns", "sched_ns")}
        cols["seq"], cols["flags"] = t.column("seq").to_numpy(), t.column("flags").to_numpy()
        cols["run_id"] = t.column("run_id").to_numpy(zero_copy_only=False)
        cols["file"] = np.full(t.num_rows, i)
        # A file's name says its stream and first seq; its rows are contiguous from there.
        stream, first = map(int, f.stem.split("-"))
        assert stream == 1 and cols["seq"][0] == first
        assert np.array_equal(cols["seq"], np.arange(first, first + t.num_rows)), f
        # One interval per file, in the partition of its start.
        starts = np.unique(cols["sched_ns"] // (INTERVAL_S * 10**9))
        assert len(starts) == 1, f"{f} spans intervals {starts}"
        hour = time.strftime("%H", time.gmtime(int(starts[0]) * INTERVAL_S))
        assert f.parent.name == f"hour={hour}"
        parts.append(cols)
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(out["seq"], kind="stable")
    return {k: v[order] for k, v in out.items()}


def assert_every_seq_once(rows: dict[str, np.ndarray]) -> None:
    seq = rows["seq"]
    assert seq[0] == 0
    assert np.array_equal(seq, np.arange(len(seq))), "a seq is missing or stored twice"
    lost = (rows["flags"] & FLAG_LOST) != 0
    received = rows["rx_user_ns"] != MISSING
    assert np.array_equal(lost, ~received), "a row is lost and received, or neither"


def no_temporaries(d: Path) -> list[Path]:
    return [p for p in d.rglob(".*.tmp")]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
            if all(got.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in /metrics")


def latencies(rows: dict[str, np.ndarray]) -> np.ndarray:
    rx = np.where(rows["rx_hw_ns"] != MISSING, rows["rx_hw_ns"], rows["rx_sw_ns"])
    ok = (rx != MISSING) & (rows["send_ns"] != MISSING)
    return rx[ok] - rows["send_ns"][ok]


def test_monitor_files_restart_kill_and_metrics(tmp_path: Path) -> None:
    """Interval files, SIGTERM, /metrics equal to the stored rows, --max gauge, restart and kill -9."""
    d = tmp_path / "mon"
    port = free_port()
    holds = tmp_path / "holds"
    # p50 <= 1ns cannot hold (a packet takes longer than a nanosecond); loss <= 10^9 packets cannot break.
    a = Monitor(d, "--metrics-port", str(port), "--max", "p50=1ns", "--max", "loss=1000000000", hold=holds)
    a.wait_files(2)
    # The exporter learns of a file just after it appears.
    a.wait(lambda: metric(scrape(port), "latscope_files_stored_total") >= 2, "the exporter counts 2 files", 10)
    live = scrape(port)
    assert metric(live, "latscope_limit_broken", limit="p50=1ns") == 1.0
    assert metric(live, "latscope_limit_broken", limit="loss=1000000000") == 0.0
    a.proc.send_signal(signal.SIGTERM)
    a.wait(lambda: (holds / "monitor-stored.reached").exists(), "the last file stored", 30)
    # Every file is committed now and the exporter still serves: its figures are those of the stored rows.
    text = scrape(port)
    rows = stored(d)
    assert_every_seq_once(rows)
    assert no_temporaries(d) == []
    lat = latencies(rows)
    assert metric(text, "latscope_latency_seconds_count") == len(lat)
    for bound in PROM_BOUNDS_NS:
        assert metric(text, "latscope_latency_seconds_bucket", le=repr(bound / 1e9)) == np.count_nonzero(lat <= bound)
    assert metric(text, "latscope_latency_seconds_bucket", le="+Inf") == len(lat)
    flags = rows["flags"]
    assert metric(text, "latscope_packets_lost_total") == np.count_nonzero(flags & FLAG_LOST)
    assert metric(text, "latscope_packets_reordered_total") == np.count_nonzero(flags & FLAG_REORDERED)
    assert metric(text, "latscope_packets_duplicated_total") == np.count_nonzero(flags & FLAG_DUPLICATE)
    assert metric(text, "latscope_packets_received_total") == np.count_nonzero(rows["rx_user_ns"] != MISSING)
    (holds / "monitor-stored.go").write_text("")
    assert a.proc.wait(timeout=60) == 0
    a.err = a.proc.stderr.read()
    assert "limit broken: --max p50=1ns" in a.err
    assert "loss=1000000000" not in a.err
    # One summary row per file, matching the file's rows.
    iv = sorted(d.glob("intervals/host=*/date=*/*.parquet"))
    assert [p.name for p in iv] == sorted(p.name for p in samples_files(d))
    for p in iv:
        r = pq.read_table(p)
        assert r.schema.remove_metadata() == INTERVAL_SCHEMA
        row = r.to_pylist()[0]
        sel = (rows["seq"] >= row["first_seq"]) & (rows["seq"] <= row["last_seq"])
        assert row["packets"] == np.count_nonzero(sel)
        assert row["lost"] == np.count_nonzero(flags[sel] & FLAG_LOST)
        lat_i = latencies({k: v[sel] for k, v in rows.items()})
        assert row["max_ns"] == lat_i.max()
        exact = np.sort(lat_i)[int(np.ceil(0.999 * len(lat_i))) - 1]
        assert exact <= row["p999_ns"] <= exact * (1 + 1 / 128) + 1
    first_run = set(rows["run_id"])
    assert len(first_run) == 1
    last_a = int(rows["seq"][-1])
    assert namespaces_of(a.proc.pid) == []

    # A restart continues the stream in a new file: no seq stored twice, none skipped.
    b = Monitor(d)
    b.wait_files(1)
    assert b.stop() == 0, b.err
    assert f"continuing stream 1 at seq {last_a + 1}" in b.err
    rows = stored(d)
    assert_every_seq_once(rows)
    assert rows["seq"][rows["run_id"] != next(iter(first_run))][0] == last_a + 1

    # kill -9 mid-interval: the committed files stay whole, the open one was only ever a temporary file.
    c = Monitor(d)
    c.wait_files(1)
    c.wait(lambda: bool(no_temporaries(d)), "the next interval's temporary file")
    n_before = len(samples_files(d))
    c.proc.kill()
    c.proc.wait(timeout=30)
    assert len(samples_files(d)) == n_before
    rows = stored(d)  # reads every committed file whole
    assert_every_seq_once(rows)
    last_c = int(rows["seq"][-1])
    left = no_temporaries(d)
    assert left, "the killed monitor's unfinished file should be there for the next start to remove"
    dn = Monitor(d)
    dn.wait_files(1)
    assert dn.stop() == 0, dn.err
    assert "removed the unfinished file" in dn.err
    assert f"continuing stream 1 at seq {last_c + 1}" in dn.err
    assert no_temporaries(d) == []
    assert namespaces_of(c.proc.pid) == []
    assert_every_seq_once(stored(d))


def test_monitor_refuses_bad_input(tmp_path: Path) -> None:
    """A limit the monitor cannot judge, a too-short interval, a busy metrics port: one line, exit 2, no files."""
    cases = [(["--max", "delta.p99=1ms"], "monitor judges latency"),
             (["--interval", "100ms"], "--interval must be at least 1s")]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cases.append((["--metrics-port", str(busy.getsockname()[1])], "--metrics-port"))
        for args, words in cases:
            r = subprocess.run([str(BIN / "latscope"), "monitor", str(tmp_path / "m"), *args], text=True,
                               capture_output=True, timeout=60)
            assert r.returncode == 2, r.stderr
            assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert samples_files(tmp_path / "m") == []
