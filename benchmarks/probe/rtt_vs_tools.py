"""Round trips: latscope --mode rtt against sockperf ping-pong and irtt, on one veth path, in one invocation.

    sudo .venv/bin/python benchmarks/probe/rtt_vs_tools.py [--seconds 5] [--rounds 3]

One pair of namespaces (latscope's veth topology, 198.18.0.0/15) serves every
tool: latscope's sender and reflector, then sockperf's client and server,
then irtt's, each at 1000 round trips per second for --seconds, the tools
taking turns within every round. Each tool's RTT distribution comes from its
own file, read through `latscope import` (sockperf --full-log with
--full-rtt, irtt JSON, metric rtt) so the three use one set of statistics.
What each RTT spans differs, and that is the point of the table:

- latscope: kernel TX to kernel RX on the sender, minus the reflector's
  turnaround (both kernel timestamps): no system call, no wake-up in it;
- sockperf: user space to user space on the client (its tick counter before
  the send and after the reply), the server's turnaround included;
- irtt: user space on the client (it can use kernel timestamps for the
  receive where available), the server's processing time subtracted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import LATSCOPE, cleanup, host, scratch  # noqa: E402

from latscope.probe.config import MeasureConfig  # noqa: E402
from latscope.session import measure_all  # noqa: E402
from latscope.store.layout import ResultsStore  # noqa: E402
from latscope.topo import open_topology  # noqa: E402

SOCKPERF_PORT = 11111
IRTT_PORT = 2112


def in_ns(ns: str | None, cmd: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd] if ns else cmd


def wait_listening(ns: str | None, port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if subprocess.run(in_ns(ns, ["ss", "-Hlun", f"sport = :{port}"]), capture_output=True,
                          text=True, check=False).stdout.strip():
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on udp port {port}")


def serve_and_run(server: list[str], client: list[str], srv_ns: str | None, cli_ns: str | None, port: int,
                  timeout_s: float) -> None:
    proc = subprocess.Popen(in_ns(srv_ns, server), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(srv_ns, port)
        subprocess.run(in_ns(cli_ns, client), check=True, capture_output=True, timeout=timeout_s)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def imported(results: Path, kind: str, path: Path, name: str) -> dict:
    r = subprocess.run([LATSCOPE, "import", kind, str(path), "--name", name, "--metric", "rtt", "--json",
                        "--results", str(results)], capture_output=True, text=True, check=False)
    if r.returncode:
        raise SystemExit(f"import {kind}: {r.stderr.strip()}")
    return json.loads(r.stdout)["latency_us"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    opts = ap.parse_args()
    results = scratch()
    store = ResultsStore(results)
    rows: dict[str, list[dict]] = {"latscope --mode rtt": [], "sockperf ping-pong": [], "irtt": []}
    try:
        with open_topology("veth") as topo:
            srv, cli, addr = topo.receiver.netns, topo.sender.netns, topo.receiver.address4
            assert addr and addr.startswith("198.1"), addr
            for rnd in range(opts.rounds):
                cfg = MeasureConfig(topology="veth", count=opts.seconds * 1000, mode="rtt", name=f"lat{rnd}")
                rows["latscope --mode rtt"].append(measure_all(cfg, store, path=topo)[0].summary["latency_us"])
                log = results / f"sockperf{rnd}.log"
                serve_and_run(["sockperf", "server", "-i", addr, "-p", str(SOCKPERF_PORT)],
                              ["sockperf", "ping-pong", "-i", addr, "-p", str(SOCKPERF_PORT), "-t", str(opts.seconds),
                               "--mps", "1000", "--full-rtt", "--full-log", str(log)],
                              srv, cli, SOCKPERF_PORT, opts.seconds + 30)
                rows["sockperf ping-pong"].append(imported(results, "sockperf", log, f"sp{rnd}"))
                out = results / f"irtt{rnd}.json"
                serve_and_run(["irtt", "server", "-i", "1ms", "-b", f"{addr}:{IRTT_PORT}"],
                              ["irtt", "client", "-Q", "-i", "1ms", "-d", f"{opts.seconds}s", "-o", str(out),
                               f"{addr}:{IRTT_PORT}"], srv, cli, IRTT_PORT, opts.seconds + 30)
                rows["irtt"].append(imported(results, "irtt", out, f"irtt{rnd}"))
    finally:
        cleanup(results)
    print(f"# {host()}, {opts.rounds} rounds of {opts.seconds} s at 1 kHz per tool, one veth path")
    print("| tool | RTT p50 (us), per round | RTT p99 (us), per round |")
    print("|---|---|---|")
    for tool, docs in rows.items():
        p50 = " / ".join(f"{d['p50']:.1f}" for d in docs)
        p99 = " / ".join(f"{d['p99']:.1f}" for d in docs)
        print(f"| {tool} | {p50} | {p99} |")


if __name__ == "__main__":
    main()
