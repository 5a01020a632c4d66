"""The rate `--stress net:udp,streams=3` floods the veth path at, against iperf3 run by hand on the same path.

Each round: one `latscope run --topology veth --stress net:udp,streams=N[,rate=R]`
(the rate and losses it records in run.json), then, on a veth pair built
by latscope's own topology code (same namespaces, addresses and veth), N
iperf3 servers in the receiver's namespace and N clients in the sender's
with the same -u/-b/-l settings for the same time, started by this script
through `ip netns exec`. Rounds alternate, so drift of the shared VM hits
both alike.

    .venv/bin/python benchmarks/stress/net_flood_rate.py --rounds 3 --count 10000
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LATSCOPE = str(Path(sys.executable).parent / "latscope")


def latscope_round(spec: str, count: int) -> dict:
    results = Path(tempfile.mkdtemp(prefix="latscope-bench-"))
    try:
        r = subprocess.run([LATSCOPE, "run", "--topology", "veth", "--count", str(count), "--stress", spec, "--json",
                            "-q", "--results", str(results)], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise SystemExit(f"latscope failed: {r.stderr.strip()}")
        (run_json,) = results.glob("*/run.json")
        doc = json.loads(run_json.read_text())
        a = doc["stress"][0]["achieved"]
        return {"bps": a["sent_bits_per_second"], "lost_percent": a["lost_percent"],
                "seconds": statistics.mean(s["seconds"] for s in a["per_stream"]),
                "p99_us": doc["summary"]["latency_us"]["p99"]}
    finally:
        shutil.rmtree(results, ignore_errors=True)


def by_hand_round(streams: int, rate: int, size: int | None, seconds: float) -> dict:
    from latscope.topo.veth import veth_pair

    with veth_pair() as path:
        rx, tx = path.receiver, path.sender
        servers, clients = [], []
        for i in range(streams):
            port = 5201 + i
            servers.append(subprocess.Popen(["ip", "netns", "exec", rx.netns, "iperf3", "-s", "-1", "-B",
                                             rx.address4, "-p", str(port), "-J"],
                                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        time.sleep(0.5)  # the servers listen (a benchmark, not a test: a fixed pause is acceptable here)
        for i in range(streams):
            argv = ["ip", "netns", "exec", tx.netns, "iperf3", "-c", rx.address4, "-B", tx.address4, "-p",
                    str(5201 + i), "-u", "-b", str(rate), "-t", f"{seconds:.1f}", "-i", "0", "-J"]
            if size:
                argv += ["-l", str(size)]
            clients.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        bps = 0.0
        lost = datagrams = 0
        for c in clients:
            out, _ = c.communicate(timeout=seconds + 30)
            bps += json.loads(out)["end"]["sum"]["bits_per_second"]
        for s in servers:
            out, _ = s.communicate(timeout=30)
            got = json.loads(out)["end"]["sum"]
            lost += got["lost_packets"]
            datagrams += got["packets"]
        return {"bps": bps, "lost_percent": 100.0 * lost / datagrams if datagrams else None, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--count", type=int, default=10_000, help="probe packets per latscope run (1 ms apart)")
    ap.add_argument("--streams", type=int, default=3)
    ap.add_argument("--rate", default="100M", help="per stream, as --stress rate= takes it")
    ap.add_argument("--size", type=int, default=None)
    args = ap.parse_args()
    from latscope.experiment.spec import parse_stress

    spec_text = f"net:udp,streams={args.streams},rate={args.rate}" + (f",size={args.size}" if args.size else "")
    spec = parse_stress(spec_text)
    ours, hand = [], []
    for i in range(args.rounds):
        ours.append(latscope_round(spec_text, args.count))
        # The same time as latscope's clients ran (from connected to stopped).
        hand.append(by_hand_round(spec.streams, spec.rate or 0, spec.size, ours[-1]["seconds"]))
        print(f"round {i + 1}: latscope {ours[-1]['bps'] / 1e6:.1f} Mbit/s (lost {ours[-1]['lost_percent']:.3f} %, "
              f"{ours[-1]['seconds']:.1f} s, probe p99 {ours[-1]['p99_us']:.1f} us) | by hand "
              f"{hand[-1]['bps'] / 1e6:.1f} Mbit/s (lost {hand[-1]['lost_percent']:.3f} %)", flush=True)
    med = {k: statistics.median(r["bps"] for r in v) / 1e6 for k, v in (("latscope", ours), ("hand", hand))}
    print(f"{spec_text}: median latscope {med['latscope']:.1f} Mbit/s, by hand {med['hand']:.1f} Mbit/s, "
          f"ratio {med['latscope'] / med['hand']:.3f}; target {spec.streams * (spec.rate or 0) / 1e6:.0f} Mbit/s")


if __name__ == "__main__":
    main()
