#!/usr/bin/env python3
"""Benchmark: the agents' control overhead per run (issue 9), against a run that needs no agent.

    sudo .venv/bin/python benchmarks/agent_overhead.py [--repeat 5] [--count 1000]

Two "hosts" as the tests build them (tests/integration/agenthosts.py: two
namespaces joined by a veth, a `latscope agent` in each). In one invocation,
interleaved, ``--repeat`` times each:

* agents: `latscope run --from A --to B --count N` typed on host A (connect,
  authenticate both ways, hello, environments, clock checks, spawn both halves
  through the agents, collect, store);
* baseline: `latscope run --topology veth --count N` (both halves started
  locally, on a veth pair latscope builds itself);
* the connection alone: TCP connect + the HMAC challenge-response + hello,
  in this process (remote.netlink.connect).

Per run, set-up and teardown = wall time - the stream's N x 1 ms.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latscope import netns  # noqa: E402
from latscope.probe.auth import load_key  # noqa: E402
from latscope.remote.netlink import connect  # noqa: E402
from tests.integration.agenthosts import A, B, two_hosts  # noqa: E402

BIN = Path(sys.executable).parent / "latscope"


def timed(argv: list[str]) -> float:
    t0 = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--count", type=int, default=1000)
    a = ap.parse_args()
    stream = a.count * 1e-3
    agents, local, handshakes = [], [], []
    with tempfile.TemporaryDirectory(prefix="latscope-bench-agent-") as tmp:
        results = Path(tmp) / "results"
        with two_hosts(Path(tmp)) as hosts:
            key = load_key(str(hosts.key))
            for _ in range(a.repeat):
                agents.append(timed(hosts.run_argv(results, "--from", A, "--to", B, "--key-file", str(hosts.key),
                                                   "--count", str(a.count), "--period", "1ms")))
                local.append(timed([str(BIN), "run", "--topology", "veth", "--count", str(a.count), "--period",
                                    "1ms", "-q", "--results", str(results)]))
                t0 = time.monotonic()
                link = netns.in_namespace(hosts.ns_a, connect, B, key)
                link.hello()
                handshakes.append(time.monotonic() - t0)
                link.close()
    med = statistics.median
    print(f"{a.repeat} runs each of {a.count} packets at 1 ms (stream {stream:.1f} s), interleaved")
    print(f"agents (--from/--to):   wall median {med(agents):.2f} s, set-up+teardown {med(agents) - stream:.2f} s "
          f"(min {min(agents) - stream:.2f}, max {max(agents) - stream:.2f})")
    print(f"baseline (veth, local): wall median {med(local):.2f} s, set-up+teardown {med(local) - stream:.2f} s "
          f"(min {min(local) - stream:.2f}, max {max(local) - stream:.2f})")
    print(f"agent overhead per run: {med(agents) - med(local):+.2f} s (median against median)")
    print(f"connect + authenticate + hello: median {med(handshakes) * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
