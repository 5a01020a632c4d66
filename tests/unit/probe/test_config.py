"""Validation of a measurement request and parsing of destinations."""

from __future__ import annotations

import pytest

from latscope.errors import ConfigError
from latscope.probe.config import MeasureConfig, host_and_port, parse_hostport


def test_defaults_are_the_classic_stream() -> None:
    """By default: one 64-byte UDP packet every 1 ms, 60000 packets, about a minute."""
    cfg = MeasureConfig()
    assert (cfg.period_ns, cfg.count, cfg.size, cfg.family) == (1_000_000, 60_000, 64, "inet")
    assert cfg.duration_ns == 60 * 10**9


@pytest.mark.parametrize(("kw", "needle"), [
    ({"period_ns": 1000}, "--period"),
    ({"count": 0}, "--count"),
    ({"size": 63}, "--size"),
    ({"family": "packet", "size": 1501}, "Ethernet"),
    ({"spin_ns": 2_000_000}, "--spin"),
    ({"vid": 5}, "--l2"),
    ({"family": "packet", "vid": 4095}, "--vid"),
    ({"family": "packet", "pcp": 8}, "--pcp"),
    ({"topology": "none"}, "--dest"),
    ({"topology": "veth", "dest": "1.2.3.4:5"}, "--dest"),
    ({"topology": "none", "dest": "x:1", "family": "packet"}, "two hosts"),
    ({"prio_send": 0}, "--prio-send"),
    ({"cpu_recv": 4096}, "--cpu-recv"),
    ({"tos": 256}, "--tos"),
    ({"port": 0}, "--port"),
    ({"family": "ipx"}, "family"),
])
def test_invalid_requests(kw: dict, needle: str) -> None:
    """Each impossible value or combination is a ConfigError naming the option."""
    with pytest.raises(ConfigError, match=needle):
        MeasureConfig(**kw)


@pytest.mark.parametrize(("text", "expected"), [
    ("198.18.0.2:5000", ("198.18.0.2", 5000)),
    ("host", ("host", 48500)),
    ("[2001:2::2]:7", ("2001:2::2", 7)),
    ("2001:2::2", ("2001:2::2", 48500)),
])
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    """HOST:PORT, bare hosts and bracketed or bare IPv6 addresses are understood."""
    assert parse_hostport(text, 48500) == expected


@pytest.mark.parametrize("text", [":5", "host:port", "host:70000", "[::1]:x", "[::1", "[::1]5", "[]:5", "h:0"])
def test_parse_hostport_rejects(text: str) -> None:
    """Missing hosts and bad ports are ConfigErrors."""
    with pytest.raises(ConfigError):
        parse_hostport(text, 1)


@pytest.mark.parametrize(("text", "port", "expected"), [
    ("127.0.0.1", None, ("127.0.0.1", 48500)),
    ("127.0.0.1", 6000, ("127.0.0.1", 6000)),
    ("127.0.0.1:6000", None, ("127.0.0.1", 6000)),
    ("127.0.0.1:6000", 6000, ("127.0.0.1", 6000)),
    ("[::1]:7", None, ("::1", 7)),
    ("[::1]", 8, ("::1", 8)),
    ("::", 9, ("::", 9)),
])
def test_host_and_port(text: str, port: int | None, expected: tuple[str, int]) -> None:
    """The port comes from the address, from --port, from both when they agree, else the default."""
    assert host_and_port(text, port, "--bind") == expected


def test_host_and_port_conflict_names_both() -> None:
    """A port in the address and a different --port: one error that names both."""
    with pytest.raises(ConfigError, match=r"--bind 127.0.0.1:6000 says port 6000 but --port says 7000"):
        host_and_port("127.0.0.1:6000", 7000, "--bind")
    with pytest.raises(ConfigError, match="--port must be 1..65535"):
        host_and_port("127.0.0.1", 0, "--bind")


def test_dest_port_conflict_is_a_config_error() -> None:
    """run --topology none --dest HOST:PORT --port OTHER fails before anything is built."""
    with pytest.raises(ConfigError, match="give the port once"):
        MeasureConfig(topology="none", dest="198.18.0.2:5000", port=5001)
    assert MeasureConfig(topology="none", dest="198.18.0.2:5000", port=5000).port == 5000


def test_remote_topology_takes_l2_and_no_dest() -> None:
    """send's one config: the remote topology accepts --l2 frames (the endpoint says where), not --dest."""
    from latscope.probe.config import REMOTE

    assert MeasureConfig(topology=REMOTE, family="packet", vid=5).family == "packet"
    with pytest.raises(ConfigError, match="--dest is only"):
        MeasureConfig(topology=REMOTE, dest="198.18.0.2:5000")


def test_cpu_dma_latency_needs_the_device(tmp_path) -> None:
    """--cpu-dma-latency on a kernel without /dev/cpu_dma_latency is a clear ConfigError; None does nothing."""
    from latscope.probe.rt import cpu_dma_latency

    with cpu_dma_latency(None) as held:
        assert held == {"requested": None}
    with pytest.raises(ConfigError, match="does not exist"), cpu_dma_latency(0, str(tmp_path / "missing")):
        pass
    with pytest.raises(ConfigError, match="--cpu-dma-latency"):
        MeasureConfig(cpu_dma_latency_us=-1)


def test_tos_and_so_priority_reach_the_socket() -> None:
    """--tos and --so-priority are set on the real sending socket (IPv4 and IPv6)."""
    import socket

    from latscope.probe.sockets import IPV6_TCLASS, open_sender
    from latscope.probe.spec import Endpoint

    out = open_sender(Endpoint("inet", "127.0.0.1", 9), tos=0xB8, so_priority=5, txtime=False)
    assert out.sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 0xB8
    assert out.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY) == 5
    out.sock.close()
    out6 = open_sender(Endpoint("inet6", "::1", 9), tos=0x20, so_priority=None, txtime=False)
    assert out6.sock.getsockopt(socket.IPPROTO_IPV6, IPV6_TCLASS) == 0x20
    out6.sock.close()


def test_key_file_needs_room_for_the_mac_and_a_private_file(tmp_path) -> None:
    """--key-file: the file is checked when the request is made, and packets must hold header and MAC."""
    key = tmp_path / "key"
    key.write_bytes(b"secret")
    key.chmod(0o600)
    assert MeasureConfig(key_file=str(key), size=80).key_file == str(key)
    with pytest.raises(ConfigError, match="--size must be at least 80"):
        MeasureConfig(key_file=str(key), size=64)
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="other users"):
        MeasureConfig(key_file=str(key), size=80)
    with pytest.raises(ConfigError, match="--stream"):
        MeasureConfig(stream=2**31)
