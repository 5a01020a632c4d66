"""What a load achieved, read from the tools' own reports (iperf3 -J, fio JSON, stress-ng --yaml).

Pure functions of the report texts; a report that is missing or unreadable
gives ``{"error": ...}`` rather than an exception: the run is kept, its
record says what is not known.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def _json(text: str | None) -> dict[str, Any] | None:
    """The JSON document in a tool's output file (fio may write a line of text before it)."""
    if not text:
        return None
    start = text.find("{")
    if start < 0:
        return None
    try:
        doc = json.loads(text[start:])
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def iperf3_stream(client_text: str | None, server_text: str | None, protocol: str) -> dict[str, Any]:
    """One iperf3 stream: the sender's rate from the client's report, losses from the server's.

    A client stopped by SIGINT reports what it sent but never hears the
    server's totals; the server (one-off, -J) reports what arrived.
    """
    client, server = _json(client_text), _json(server_text)
    out: dict[str, Any] = {}
    if client is None:
        out["error"] = "no report from the iperf3 client"
    else:
        end = client.get("end") or {}
        total = end.get("sum") if protocol == "udp" else end.get("sum_sent")
        total = total or {}
        out["sent_bytes"] = total.get("bytes")
        out["seconds"] = total.get("seconds")
        out["sent_bits_per_second"] = total.get("bits_per_second")
        if protocol == "udp":
            out["sent_packets"] = total.get("packets")
        else:
            out["retransmits"] = total.get("retransmits")
        test = (client.get("start") or {}).get("test_start") or {}
        out["size_bytes"] = test.get("blksize")
        if client.get("error"):
            out["client_note"] = str(client["error"])[:200]
    if server is not None:
        end = server.get("end") or {}
        got = end.get("sum_received") or end.get("sum") or {}
        out["received_bytes"] = got.get("bytes")
        if protocol == "udp":
            out["lost_packets"] = got.get("lost_packets")
            out["datagrams"] = got.get("packets")
            out["lost_percent"] = got.get("lost_percent")
    elif client is not None:
        out["server_note"] = "no report from the iperf3 server"
    return out


def iperf3_total(streams: Sequence[dict[str, Any]], protocol: str) -> dict[str, Any]:
    """The streams of one net load together: rate, bytes and (UDP) losses summed."""
    def total(key: str) -> float | int | None:
        values = [s.get(key) for s in streams]
        return sum(v for v in values if isinstance(v, (int, float))) if any(
            isinstance(v, (int, float)) for v in values) else None

    out: dict[str, Any] = {"streams": len(streams),
                           "sent_bits_per_second": total("sent_bits_per_second"),
                           "sent_bytes": total("sent_bytes"), "received_bytes": total("received_bytes")}
    if protocol == "udp":
        out["sent_packets"] = total("sent_packets")
        lost, datagrams = total("lost_packets"), total("datagrams")
        out["lost_packets"] = lost
        out["lost_percent"] = round(100.0 * lost / datagrams, 4) if lost is not None and datagrams else None
    else:
        out["retransmits"] = total("retransmits")
    out["per_stream"] = list(streams)
    return out


def fio_achieved(text: str | None) -> dict[str, Any]:
    """IOPS, bandwidth, I/Os and fsyncs of the fio job."""
    doc = _json(text)
    jobs = (doc or {}).get("jobs") or []
    if not jobs:
        return {"error": "no report from fio"}
    job = jobs[0]
    write = job.get("write") or {}
    sync = job.get("sync") or {}
    return {"iops": write.get("iops"), "bytes_per_second": write.get("bw_bytes"),
            "ios": write.get("total_ios"), "bytes": write.get("io_bytes"), "fsyncs": sync.get("total_ios"),
            "runtime_ms": job.get("job_runtime"), "error": job.get("error") or None,
            "write_latency_ns": {k: (write.get("clat_ns") or {}).get(k) for k in ("mean", "max")},
            "version": (doc or {}).get("fio version")}


def stressng_achieved(text: str | None, stressor: str) -> dict[str, Any]:
    """Bogo ops and bogo ops per second of ``stressor`` from stress-ng's --yaml report.

    The report is a small, flat YAML document; its ``metrics`` list is read
    line by line (``- stressor: cpu`` starts an entry, ``key: value`` follow).
    """
    if not text:
        return {"error": "no report from stress-ng"}
    entries: list[dict[str, str]] = []
    in_metrics = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip():
            continue
        if not raw.startswith(" "):
            in_metrics = line.startswith("metrics:")
            continue
        if not in_metrics:
            continue
        item = line.strip()
        if item.startswith("- "):
            entries.append({})
            item = item[2:]
        key, sep, value = item.partition(":")
        if sep and entries:
            entries[-1][key.strip()] = value.strip()
    for entry in entries:
        if entry.get("stressor") == stressor:
            return {"bogo_ops": _num(entry.get("bogo-ops")),
                    "bogo_ops_per_second": _num(entry.get("bogo-ops-per-second-real-time")),
                    "bogo_ops_per_second_cpu_time": _num(entry.get("bogo-ops-per-second-usr-sys-time")),
                    "wall_clock_s": _num(entry.get("wall-clock-time")),
                    "cpu_usage_per_instance_percent": _num(entry.get("cpu-usage-per-instance"))}
    return {"error": f"no {stressor} metrics in stress-ng's report"}


def _num(text: str | None) -> float | int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return None
