"""What writing a line per packet during the run costs, against latscope's deferred writing.

    .venv/bin/python benchmarks/probe/stream_log_cost.py [--count 20000] [--rounds 3]

Alternates runs with and without --stream-log (same veth topology, 100 us
period, CPUs, SCHED_FIFO priorities and spin) and compares latency, arrival
latency and e2e percentiles, and periods the sender missed. Each
round runs both variants back to back so the machine's noise hits both.
"""

from __future__ import annotations

import argparse

import numpy as np

from common import cleanup, host, run_latscope, samples, scratch


def one(count: int, period_us: int, stream_log: bool) -> dict:
    results = scratch()
    try:
        args = ["--count", str(count), "--period", f"{period_us}us", "--cpu-send", "0", "--cpu-recv", "1",
                "--prio-send", "80", "--prio-recv", "80", "--spin", "20us"]
        doc = run_latscope(args + (["--stream-log"] if stream_log else []), results)
        s = samples(results, doc["run_id"], ["sched_ns", "send_ns"])
        missed = int(np.count_nonzero((s["send_ns"] - s["sched_ns"]) > period_us * 1000))
        return {"lat_p99": doc["latency_us"]["p99"], "lat_max": doc["latency_us"]["max"],
                "arr_p99": doc["arrival_latency_us"]["p99"], "arr_max": doc["arrival_latency_us"]["max"],
                "e2e_p99": doc["e2e_us"]["p99"], "e2e_p999": doc["e2e_us"]["p999"], "missed": missed}
    finally:
        cleanup(results)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--period-us", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    rows: dict[str, list[dict]] = {"deferred (default)": [], "--stream-log": []}
    for _ in range(a.rounds):
        rows["deferred (default)"].append(one(a.count, a.period_us, False))
        rows["--stream-log"].append(one(a.count, a.period_us, True))
    print(f"host: {host()}; veth, {a.count} packets every {a.period_us} us, {a.rounds} rounds (medians)")
    print("| writing | latency p99 (us) | latency max (us) | arrival p99 (us) | arrival max (us) | e2e p99 (us) "
          "| e2e p99.9 (us) | missed periods |")
    print("|---|---|---|---|---|---|---|---|")
    med = {}
    for name, vals in rows.items():
        med[name] = {k: float(np.median([v[k] for v in vals])) for k in vals[0]}
        m = med[name]
        print(f"| {name} | {m['lat_p99']:.3f} | {m['lat_max']:.3f} | {m['arr_p99']:.3f} | {m['arr_max']:.3f} "
              f"| {m['e2e_p99']:.3f} | {m['e2e_p999']:.3f} | {m['missed']:.0f} |")
    base, log = med["deferred (default)"], med["--stream-log"]
    print(f"\nratio --stream-log / deferred: e2e p99.9 x{log['e2e_p999'] / base['e2e_p999']:.2f}, "
          f"missed periods x{(log['missed'] + 1) / (base['missed'] + 1):.2f}, "
          f"e2e p99 x{log['e2e_p99'] / base['e2e_p99']:.2f}, "
          f"arrival p99 x{log['arr_p99'] / base['arr_p99']:.2f}, latency p99 x{log['lat_p99'] / base['lat_p99']:.2f}")


if __name__ == "__main__":
    main()
