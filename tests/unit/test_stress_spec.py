"""--stress specs: parsing (pure), the checks against tools and the run, and the tools' reports read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from latscope.errors import ConfigError
from latscope.experiment import results
from latscope.experiment.spec import (
    DEFAULT_IO_SIZE,
    DEFAULT_NET_RATE,
    check_plan,
    check_tools,
    parse_all,
    parse_stress,
)

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "stress"


def test_the_campaign_form_parses() -> None:
    """net:udp,streams=3 is three UDP floods at the default rate, the text kept as given."""
    s = parse_stress("net:udp,streams=3")
    assert (s.kind, s.protocol, s.streams, s.rate, s.size, s.text) == \
        ("net", "udp", 3, DEFAULT_NET_RATE, None, "net:udp,streams=3")
    assert s.tool == "iperf3" and s.package == "iperf3"


def test_defaults_and_units() -> None:
    """Bare kinds take the documented defaults; rates are decimal (bits/s), sizes binary (bytes)."""
    assert parse_stress("net").protocol == "udp"
    tcp = parse_stress("net:tcp,rate=200M,size=8K")
    assert (tcp.protocol, tcp.rate, tcp.size) == ("tcp", 200_000_000, 8192)
    io = parse_stress("io:dir=/tmp,bs=64k,size=1G,rate=2M")
    assert (io.dir, io.bs, io.size, io.rate) == ("/tmp", 65536, 1 << 30, 2 << 20)
    assert parse_stress("io").size == DEFAULT_IO_SIZE and parse_stress("io").dir is None
    cpu = parse_stress("cpu:workers=2,cpus=0-1+3")
    assert (cpu.workers, cpu.cpus, cpu.cpus_text) == (2, (0, 1, 3), "0-1+3")
    vm = parse_stress("vm:bytes=64M")
    assert (vm.workers, vm.vm_bytes, vm.tool) == (1, 64 << 20, "stress-ng")


@pytest.mark.parametrize(("text", "named"), [
    ("net:streams=0", "streams=0"),
    ("net:streams=17", "streams=17"),
    ("net:bogus=1", "bogus=1"),
    ("net:udp,tcp", "udp/tcp"),
    ("net:rate=fast", "rate="),
    ("net:rate=0", "rate="),
    ("net:udp,size=70000", "size="),
    ("disk", "disk"),
    ("io:bs=1M,size=512K", "size="),
    ("io:dir=", "dir="),
    ("cpu:workers=0", "workers=0"),
    ("cpu:cpus=1-0", "1-0"),
    ("cpu:cpus=x", "cpus="),
    ("cpu:bytes=1M", "bytes=1M"),
    ("net:,", "unknown item"),
])
def test_bad_specs_name_the_bad_item(text: str, named: str) -> None:
    """Each bad spec is one line that names the item at fault."""
    with pytest.raises(ConfigError) as exc:
        parse_stress(text)
    msg = str(exc.value)
    assert "\n" not in msg and named in msg and msg.startswith("--stress ")


def test_too_many_streams_over_all_specs() -> None:
    """Streams are bounded per spec and per run."""
    parse_all(["net:streams=16", "net:streams=16"])
    with pytest.raises(ConfigError, match="at most 32"):
        parse_all(["net:streams=16", "net:streams=16", "net"])


def test_check_tools_names_the_package() -> None:
    """A missing program is one line naming its Debian package."""
    specs = [parse_stress("cpu"), parse_stress("io:dir=/tmp")]
    check_tools(specs, which=lambda name: "/usr/bin/" + name)
    with pytest.raises(ConfigError) as exc:
        check_tools(specs, which=lambda name: None if name == "fio" else "/usr/bin/" + name)
    assert "Debian package fio" in str(exc.value) and "stress-ng" not in str(exc.value)


def test_check_plan(tmp_path: Path) -> None:
    """net needs a built topology, io a directory, cpus= existing CPUs, vm= less than half the memory."""
    net, io = parse_stress("net"), parse_stress("io")
    check_plan([net], topology="veth", log_target=False)
    check_plan([net], topology="loopback", log_target=False)
    for topo in ("none", "vm", "vm:macvtap"):
        with pytest.raises(ConfigError, match="net"):
            check_plan([net], topology=topo, log_target=False)
    with pytest.raises(ConfigError, match="io needs dir=PATH or --log-fs"):
        check_plan([io], topology="veth", log_target=False)
    check_plan([io], topology="veth", log_target=True)
    check_plan([parse_stress(f"io:dir={tmp_path}")], topology="veth", log_target=False)
    with pytest.raises(ConfigError, match="not a directory"):
        check_plan([parse_stress(f"io:dir={tmp_path / 'nope'}")], topology="veth", log_target=False)
    with pytest.raises(ConfigError, match="CPUs 0..1"):
        check_plan([parse_stress("cpu:cpus=2")], topology="veth", log_target=False, ncpus=2)
    with pytest.raises(ConfigError, match="half"):
        check_plan([parse_stress("vm:workers=2,bytes=1G")], topology="veth", log_target=False, mem_total=3 << 30)


def test_iperf3_reports() -> None:
    """A UDP stream: the rate from the client's report, the losses from the server's; sums over streams."""
    cl, sv = (FIX / "iperf3-udp-client.json").read_text(), (FIX / "iperf3-udp-server.json").read_text()
    st = results.iperf3_stream(cl, sv, "udp")
    assert st["sent_bits_per_second"] > 0 and st["sent_packets"] > 0 and st["lost_packets"] is not None
    assert st["received_bytes"] > 0 and st["datagrams"] >= st["sent_packets"] - st["lost_packets"] - 1
    total = results.iperf3_total([st, st], "udp")
    assert total["sent_bits_per_second"] == 2 * st["sent_bits_per_second"]
    assert total["sent_packets"] == 2 * st["sent_packets"]
    tcp = results.iperf3_stream((FIX / "iperf3-tcp-client.json").read_text(),
                                (FIX / "iperf3-tcp-server.json").read_text(), "tcp")
    assert tcp["sent_bits_per_second"] > 0 and tcp["received_bytes"] > 0 and "lost_packets" not in tcp
    assert "error" in results.iperf3_stream(None, None, "udp")
    assert results.iperf3_stream("{ truncated", sv, "udp")["error"]


def test_fio_and_stressng_reports() -> None:
    """fio: IOPS, bandwidth and fsyncs (after its leading line of text); stress-ng: bogo ops from --yaml."""
    fio = results.fio_achieved((FIX / "fio.json").read_text())
    assert fio["iops"] > 0 and fio["bytes_per_second"] > 0 and fio["fsyncs"] > 0 and fio["error"] is None
    assert "error" in results.fio_achieved("fio: terminating on signal 2\n")
    for kind in ("cpu", "vm"):
        got = results.stressng_achieved((FIX / f"stress-ng-{kind}.yaml").read_text(), kind)
        assert got["bogo_ops"] > 0 and got["bogo_ops_per_second"] > 0
    assert "error" in results.stressng_achieved((FIX / "stress-ng-cpu.yaml").read_text(), "vm")
    assert "error" in results.stressng_achieved("", "cpu")


def test_log_options_without_stream_log_are_refused_in_one_sentence(tmp_path: Path) -> None:
    from latscope.experiment.logfs import check_log_options

    with pytest.raises(ConfigError, match=r"^--log-fs only makes sense with --stream-log \("):
        check_log_options(None, "ext4", stream_log=False, topology="veth")
    with pytest.raises(ConfigError, match=r"^--log-dir only makes sense with --stream-log \("):
        check_log_options("/tmp", None, stream_log=False, topology="veth")
    with pytest.raises(ConfigError, match=r"^--log-dir and --log-fs only make sense with --stream-log \("):
        check_log_options("/tmp", "tmpfs", stream_log=False, topology="veth")
    check_log_options(str(tmp_path), "tmpfs", stream_log=True, topology="veth")
