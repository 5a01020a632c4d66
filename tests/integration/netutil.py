"""Test-side helpers for namespaces latscope creates: find them, put nftables rules in them."""

from __future__ import annotations

import os
import subprocess

NETNS_DIR = "/run/netns"


def namespaces_of(pid: int) -> list[str]:
    """latscope namespaces owned by process ``pid``."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(f"latscope-{pid}-"))
    except FileNotFoundError:
        return []


def nft_drop_seq_range(netns: str, port: int, first: int, last: int) -> None:
    """Drop UDP packets to ``port`` whose probe seq lies in [first, last], inside ``netns``.

    The seq is a 64-bit field 12 bytes into the payload: bit 64 (after the UDP
    header) + 96 of the transport header.
    """
    rules = (
        "table inet latscope_test {\n"
        "  chain input { type filter hook input priority 0; policy accept;\n"
        f"    udp dport {port} @th,160,64 {first}-{last} counter drop\n"
        "  }\n"
        "}\n"
    )
    subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=rules, text=True, check=True,
                   capture_output=True)


def nft_dropped(netns: str) -> int:
    """Packets the test's drop rule counted."""
    out = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "inet", "latscope_test"],
                         text=True, check=True, capture_output=True).stdout
    for line in out.splitlines():
        if "counter packets" in line:
            return int(line.split("counter packets")[1].split()[0])
    raise AssertionError(f"no counter in ruleset:\n{out}")
