"""`recv --bind` and `send --dest` take the same address forms (HOST, HOST:PORT, [IPV6]:PORT) with --port."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN


def free_udp_port(family: socket.AddressFamily, host: str) -> int:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pair(results: Path, recv_args: list[str], send_args: list[str]) -> tuple[dict, dict]:
    """Run a receiver with ``recv_args`` and, once it listens, a 200-packet sender with ``send_args``."""
    recv = subprocess.Popen([str(BIN / "latscope"), "recv", *recv_args, "--idle-timeout", "2s", "--timeout", "30s",
                             "--json", "--results", str(results)], text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert recv.stderr is not None
        line = recv.stderr.readline()  # "latscope: listening on ..." once the socket is bound
        assert "listening" in line, line
        send = subprocess.run([str(BIN / "latscope"), "send", *send_args, "--count", "200", "--period", "500us",
                               "-q", "--json"], capture_output=True, text=True, timeout=60)
        out, err = recv.communicate(timeout=30)
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
    assert send.returncode == 0, send.stderr
    assert recv.returncode == 0, err
    return json.loads(send.stdout), json.loads(out)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["host:port", "host --port", "[v6]:port", "v6 --port"])
def test_bind_and_dest_forms(results: Path, form: str) -> None:
    """Each form reaches the receiver on the port it names: every packet arrives, at that address and port."""
    v6 = "v6" in form
    host = "::1" if v6 else "127.0.0.1"
    port = free_udp_port(socket.AF_INET6 if v6 else socket.AF_INET, host)
    if form.endswith("--port"):
        where, extra = [host], ["--port", str(port)]
    else:
        where, extra = [f"[{host}]:{port}" if v6 else f"{host}:{port}"], []
    sent, run = pair(results, ["--bind", *where, *extra], ["--dest", *where, *extra])
    assert sent["sent"] == 200 and run["packets"]["received"] == 200
    assert run["config"]["listen"]["address"] == host and run["config"]["listen"]["port"] == port
    assert run["config"]["listen"]["family"] == ("inet6" if v6 else "inet")


@pytest.mark.parametrize("args", [
    ["recv", "--bind", "127.0.0.1:48601", "--port", "48602", "--timeout", "1s"],
    ["send", "--dest", "127.0.0.1:48601", "--port", "48602", "--count", "10"],
    ["run", "--topology", "none", "--dest", "127.0.0.1:48601", "--port", "48602", "--count", "10"],
    ["recv", "--bind", "[::1", "--timeout", "1s"],
    ["recv", "--bind", "127.0.0.1", "--ipv6", "--timeout", "1s"],
])
def test_port_conflicts_and_bad_forms_are_usage_errors(latscope, results: Path, args: list[str]) -> None:
    """Two different ports, a broken bracket, an IPv4 bind with --ipv6: exit 2, one line, nothing stored."""
    out = latscope(*args)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "error" in out.stderr
    assert list(results.iterdir()) == []
