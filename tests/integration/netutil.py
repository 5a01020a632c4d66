"""Test-side helpers for namespaces latscope creates: find them, put nftables rules in them."""

from __future__ import annotations

import os
import subprocess

from latscope.probe import wire

NETNS_DIR = "/run/netns"


def namespaces_of(pid: int) -> list[str]:
    """latscope namespaces owned by process ``pid``."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(f"latscope-{pid}-"))
    except FileNotFoundError:
        return []


def wait_for_namespace(name: str, timeout_s: float = 20.0) -> None:
    """Block until namespace ``name`` exists (latscope creates it at run start)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(NETNS_DIR, name)):
            return
        time.sleep(0.02)
    raise AssertionError(f"namespace {name} never appeared")


def nft_drop_seq_range(netns: str, port: int, first: int, last: int, spare_sport: int | None = None) -> None:
    """Drop UDP packets to ``port`` whose probe seq lies in [first, last], inside ``netns``.

    ``spare_sport``: datagrams from this source port pass (a test's forger).

    The seq is a 64-bit field wire.SEQ_OFFSET bytes into the payload, which
    starts after the 8-byte UDP header: bit (8 + SEQ_OFFSET) * 8 of the
    transport header.
    """
    bit = (8 + wire.SEQ_OFFSET) * 8
    rules = (
        "table inet latscope_test {\n"
        "  chain input { type filter hook input priority 0; policy accept;\n"
        f"    udp dport {port} {f'udp sport != {spare_sport} ' if spare_sport else ''}"
        f"@th,{bit},64 {first}-{last} counter drop\n"
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
