"""What the per-run nonce and the optional packet MAC cost in the probe's loops.

    .venv/bin/python benchmarks/probe/packet_auth_cost.py [--packets 100000] [--rounds 5] [--baseline-rev REV]
                                                          [--veth-count 20000]

Per-packet CPU time of the real loops (run_sender, run_receiver), each in its
own process, variants alternating within every round, medians over rounds:

- sender: run_sender towards a loopback socket with a clock that never sleeps,
  so each packet costs exactly the loop's own work (header, MAC, send call,
  TX timestamp drain);
- receiver: N datagrams queued on a loopback socket before run_receiver
  starts, so the loop drains them back to back (recvmsg, classification,
  filing timestamps);
- the MAC alone over the signed part of an 80-byte packet: wire.Signer (the
  padded key blocks hashed once) and hmac.digest (what it replaces).

``--baseline-rev`` (default: the merge base with main) runs the same loops of
that revision's source (checked out with `git archive` into a temporary
directory): the loops before this change, measured in the same invocation.
``--veth-count N`` adds two real `latscope run`s over veth (root) with and
without --key-file: the MAC is computed before the send time is taken, so
latency must not move while the sender's own work (send - wake) grows.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NONCE = 0x5EED_5EED_5EED_5EED
STREAM = 77


def _inner_sender(n: int, key_file: str | None) -> float:
    from latscope.probe import spec as specmod
    from latscope.probe.sender import run_sender
    from latscope.probe.sockets import open_sender

    class NoSleep:
        def now_ns(self) -> int:
            return time.clock_gettime_ns(time.CLOCK_REALTIME)

        def sleep_until(self, deadline_ns: int) -> None:
            return None

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))  # the kernel drops what overflows its small buffer: nothing reads it
    dest = specmod.Endpoint("inet", "127.0.0.1", sink.getsockname()[1])
    extra = {"key_file": key_file, "size": 80} if key_file else {}
    spec = specmod.SenderSpec(dest=dest, stream=STREAM, period_ns=10_000, count=n,
                              base_time_ns=time.clock_gettime_ns(time.CLOCK_REALTIME), **extra)
    out = open_sender(dest, tos=None, so_priority=None, txtime=False)
    t0 = time.thread_time_ns()
    res = run_sender(spec, out, NoSleep())
    cpu = time.thread_time_ns() - t0
    assert res.done == n
    return cpu / n


def _inner_receiver(n: int, key_file: str | None) -> float:
    from latscope.probe import spec as specmod
    from latscope.probe import wire
    from latscope.probe.clock import RealClock
    from latscope.probe.receiver import run_receiver
    from latscope.probe.sockets import open_receiver

    sock = open_receiver(specmod.Endpoint("inet", "127.0.0.1", 0))
    try:  # root: room for every datagram, so the loop drains a full queue and nothing is dropped
        sock.setsockopt(socket.SOL_SOCKET, 33, 1 << 30)  # SO_RCVBUFFORCE
    except PermissionError:
        sys.exit("the receiver benchmark needs root (SO_RCVBUFFORCE)")
    port = sock.getsockname()[1]
    listen = specmod.Endpoint("inet", "127.0.0.1", port)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(("127.0.0.1", port))
    if wire.VERSION == 1:  # the format before the nonce
        size = 64
        spec = specmod.ReceiverSpec(listen=listen, stream=STREAM, count=n, grace_ns=1_000_000)
        buf = bytearray(size)
        for seq in range(n):
            wire.pack_into(buf, kind=0, length=size, stream=STREAM, seq=seq, sched_ns=1, wake_ns=2, send_ns=3,
                           period_ns=10_000, count=n, tx_ns=4, tx_back=1 if seq else 0)
            tx.send(buf)
        tx.send(wire.end_payload(STREAM, n, [], size))
    else:
        from latscope.probe.auth import optional_key

        key = optional_key(key_file)
        signer = wire.Signer(key) if key else None
        size = wire.MIN_SIZE_MAC if key else wire.HEADER_SIZE
        spec = specmod.ReceiverSpec(listen=listen, stream=STREAM, count=n, nonce=NONCE, key_file=key_file,
                                    grace_ns=1_000_000)
        buf = bytearray(size)
        for seq in range(n):
            wire.pack_into(buf, kind=0, length=size, stream=STREAM, nonce=NONCE, seq=seq, sched_ns=1, wake_ns=2,
                           tx_ns=4, tx_back=1 if seq else 0, flags=wire.FLAG_MAC if key else 0)
            if key:
                wire.sign_into(signer, buf, 0, size)
            buf[wire.SEND_OFFSET:wire.SEND_OFFSET + 8] = (3).to_bytes(8, "big")
            tx.send(buf)
        tx.send(wire.end_payload(STREAM, NONCE, n, [], size, key))
    t0 = time.thread_time_ns()
    res = run_receiver(spec, sock, RealClock())
    cpu = time.thread_time_ns() - t0
    assert res.received == n and not res.foreign, (res.received, dict(res.foreign))
    return cpu / n


def _inner_mac(n: int, how: str | None) -> float:
    import hmac

    from latscope.probe import wire

    key = os.urandom(32)
    view = memoryview(bytearray(80))[:64]
    digest = wire.Signer(key).digest if how == "signer" else (lambda m: hmac.digest(key, m, "sha256"))
    t0 = time.perf_counter_ns()
    for _ in range(n):
        digest(view)
    return (time.perf_counter_ns() - t0) / n


def _measure(src: Path, role: str, n: int, key_file: str | None) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    r = subprocess.run([sys.executable, __file__, "--inner", role, "--packets", str(n)]
                       + (["--key", key_file] if key_file else []), env=env, capture_output=True, text=True,
                       check=False, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"{role} ({src}) failed: {r.stderr.strip()}")
    return float(r.stdout)


def _baseline_src(rev: str, tmp: Path) -> Path:
    archive = tmp / "base.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), rev, "src"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    return tmp / "src"


def _veth_runs(count: int, key_file: str) -> list[dict]:
    sys.path.insert(0, str(Path(__file__).parent))
    import numpy as np
    from common import cleanup, run_latscope, samples, scratch

    rows = []
    for label, extra in (("no key", []), ("--key-file", ["--key-file", key_file])):
        results = scratch()
        try:
            doc = run_latscope(["--count", str(count), "--period", "200us", "--cpu-send", "0", "--cpu-recv", "1",
                                "--size", "80", *extra], results)
            s = samples(results, doc["run_id"], ["wake_ns", "send_ns"])
            work = np.asarray(s["send_ns"]) - np.asarray(s["wake_ns"])
            rows.append({"label": label, "latency_p50": doc["latency_us"]["p50"],
                         "latency_p99": doc["latency_us"]["p99"], "work_p50": float(np.median(work)) / 1000,
                         "received": doc["packets"]["received"], "lost": doc["packets"]["lost"]})
        finally:
            cleanup(results)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline-rev", default=None)
    ap.add_argument("--veth-count", type=int, default=0)
    ap.add_argument("--inner", choices=["sender", "receiver", "mac"], default=None)
    ap.add_argument("--key", default=None)
    a = ap.parse_args()
    if a.inner:
        fn = {"sender": _inner_sender, "receiver": _inner_receiver}.get(a.inner)
        print(fn(a.packets, a.key) if fn else _inner_mac(a.packets, a.key))
        return
    rev = a.baseline_rev or subprocess.run(["git", "-C", str(REPO), "merge-base", "HEAD", "main"],
                                           capture_output=True, text=True, check=True).stdout.strip()
    here = REPO / "src"
    with tempfile.TemporaryDirectory(prefix="latscope-bench-") as tmpdir:
        tmp = Path(tmpdir)
        base = _baseline_src(rev, tmp)
        key = tmp / "key"
        key.write_bytes(os.urandom(32))
        key.chmod(0o600)
        variants = [("before (" + rev[:10] + ")", base, None), ("nonce, no key", here, None),
                    ("nonce + --key-file", here, str(key))]
        got: dict[tuple[str, str], list[float]] = {}
        for _ in range(a.rounds):
            for role in ("sender", "receiver"):
                for label, src, k in variants:
                    got.setdefault((role, label), []).append(_measure(src, role, a.packets, k))
            for how in ("signer", "hmac.digest"):
                got.setdefault(("mac", how), []).append(_measure(here, "mac", a.packets, how))
        veth = _veth_runs(a.veth_count, str(key)) if a.veth_count else []
    print(f"host: {os.uname().release}, {os.cpu_count()} CPUs; {a.packets} packets per loop, "
          f"{a.rounds} rounds (medians), variants alternating")
    print("| loop | " + " | ".join(label for label, _s, _k in variants) + " |")
    print("|---|" + "---|" * len(variants))
    for role in ("sender", "receiver"):
        med = [statistics.median(got[(role, label)]) for label, _s, _k in variants]
        print(f"| {role} (ns/packet, CPU) | " + " | ".join(f"{m:.0f}" for m in med) + " |")
    print(f"\nHMAC-SHA256 of the 64 signed bytes alone: {statistics.median(got[('mac', 'signer')]):.0f} ns "
          f"(wire.Signer), {statistics.median(got[('mac', 'hmac.digest')]):.0f} ns (hmac.digest)")
    if veth:
        print(f"\nveth, {a.veth_count} packets every 200 us, sender CPU 0, receiver CPU 1, 80-byte packets")
        print("| run | latency p50 (us) | latency p99 (us) | send - wake p50 (us) | received | lost |")
        print("|---|---|---|---|---|---|")
        for r in veth:
            print(f"| {r['label']} | {r['latency_p50']:.3f} | {r['latency_p99']:.3f} | {r['work_p50']:.3f} "
                  f"| {r['received']} | {r['lost']} |")
    print(json.dumps({f"{k[0]}:{k[1]}": v for k, v in got.items()}), file=sys.stderr)


if __name__ == "__main__":
    main()
