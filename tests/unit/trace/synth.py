"""Hand-made kernel-text traces for cases a real capture cannot guarantee (exact nesting, gaps, collateral).

Lines are written exactly as the kernel prints them (compare tests/fixtures/trace/veth-run.txt).
"""

from __future__ import annotations

BASE_S = 1795610000


class Trace:
    """Collects event lines; ``ts_us`` is microseconds after BASE_S seconds."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, int, str]] = []

    def add(self, ts_us: float, cpu: int, comm: str, pid: int, event: str, args: str, flags: str = "d..2.") -> None:
        sec, us = divmod(round(ts_us), 1_000_000)
        head = f"{comm:>16}-{pid:<7} [{cpu:03d}] {flags} {BASE_S + sec}.{us:06d}: "
        if event.startswith("sys_enter_"):
            body = f"sys_{event[10:]}({args})"
        elif event.startswith("sys_exit_"):
            body = f"sys_{event[9:]} -> {args}"
        elif event == "print":
            body = f"tracing_mark_write: {args}"
        else:
            body = f"{event}: {args}"
        self.lines.append((ts_us, len(self.lines), head + body))

    def switch(self, ts: float, cpu: int, prev: tuple[str, int], nxt: tuple[str, int], state: str = "S",
               prio: int = 120) -> None:
        self.add(ts, cpu, prev[0], prev[1], "sched_switch",
                 f"prev_comm={prev[0]} prev_pid={prev[1]} prev_prio={prio} prev_state={state} ==> "
                 f"next_comm={nxt[0]} next_pid={nxt[1]} next_prio={prio}")

    def text(self) -> bytes:
        body = "\n".join(line for _ts, _n, line in sorted(self.lines))
        return ("# tracer: nop\n#\n" + body + "\n").encode()


SENDER = ("sender", 100)
RECEIVER = ("receiver", 200)
IDLE0 = ("<idle>", 0)


def packet(tr: Trace, seq: int, t0: float, *, wake_receiver: bool = True, run_at: float | None = None,
           skb: str = "00000000deadbeef", tx_delay: float = 0) -> None:
    """One packet through the veth path: sender on CPU 0, receiver on CPU 1 (t0 = tx marker time, us).

    ``tx_delay`` (us) holds the packet between the send call and the device queue: every event from
    net_dev_queue on comes that much later (the caller plants what held it).
    """
    s, r = SENDER, RECEIVER
    tr.add(t0, 0, *s, "print", f"latscope tx seq={seq}", "...1.")
    tr.add(t0 + 2, 0, *s, "sys_enter_sendmsg", "fd: 5, msg: 0x7fff, flags: 0", ".....")
    t0 += tx_delay
    tr.add(t0 + 4, 0, *s, "net_dev_queue", f"dev=lst skbaddr={skb} len=106", "b....")
    tr.add(t0 + 5, 0, *s, "net_dev_start_xmit", f"dev=lst queue_mapping=0 skbaddr={skb} vlan_tagged=0 len=106",
           "b....")
    tr.add(t0 + 6, 0, *s, "netif_rx", f"dev=lsr skbaddr={skb} len=92", "b....")
    tr.add(t0 + 7, 0, *s, "net_dev_xmit", f"dev=lst skbaddr={skb} len=106 rc=0", "b....")
    tr.add(t0 + 8, 0, *s, "netif_receive_skb", f"dev=lsr skbaddr={skb} len=92", "..s1.")
    tr.add(t0 + 10, 0, *s, "sk_data_ready", "family=2 protocol=17 func=sock_def_readable", "..s1.")
    if wake_receiver:
        tr.add(t0 + 11, 0, *s, "sched_waking", f"comm={r[0]} pid={r[1]} prio=120 target_cpu=001", "d.s4.")
        tr.add(t0 + 12, 1, *IDLE0, "sched_wakeup", f"comm={r[0]} pid={r[1]} prio=120 target_cpu=001", "dNh2.")
    tr.add(t0 + 14, 0, *s, "sys_exit_sendmsg", "0x40", ".....")
    ran = run_at if run_at is not None else t0 + 20
    tr.add(ran + 2, 1, *r, "sys_exit_recvmsg", "0x40", ".....")
    tr.add(ran + 5, 1, *r, "print", f"latscope rx seq={seq}", "...1.")
    tr.add(ran + 7, 1, *r, "sys_enter_recvmsg", "fd: 6, msg: 0x7ffe, flags: 0", ".....")
