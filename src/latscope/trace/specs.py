"""Which fields of each event latscope keeps, per text dialect, and how each is printed.

Kernel text and trace-cmd's default output print the events' own format
strings (trace-cmd's plugins rewrite sched_switch); ``trace-cmd report -R``
prints raw fields in format-file order. Each table maps an event name to a
field spec (latscope.trace.fields: Key lists, Regex, Search, Alt).

Columns per event (a0..a4 numbers, s0..s1 strings; see docs/trace-format.md):

==========================  =====================================================
sched_switch                a0 prev_pid, a1 next_pid, a2 prev_prio, a3 next_prio,
                            a4 prev_state (bits, see STATE_BITS), s0 prev_comm, s1 next_comm
sched_waking/_wakeup(_new)  a0 pid, a1 prio, a2 target_cpu, s0 comm
sched_migrate_task          a0 pid, a1 prio, a2 orig_cpu, a3 dest_cpu, s0 comm
irq_handler_entry/exit      a0 irq, s0 name (entry)
softirq_raise/entry/exit    a0 vec
net_* / netif_* / napi_gro  a0 skbaddr, a1 len, s0 dev
skb_copy_datagram_iovec     a0 skbaddr, a1 len
kfree_skb                   a0 skbaddr, s0 reason
sk_data_ready               a0 family, a1 protocol
napi_poll                   a0 work, a1 budget, s0 dev
qdisc_enqueue/dequeue       a0 skbaddr
sys_exit_*                  a0 ret
print (trace_marker)        a0 seq, a1 phase (PHASES) for latscope markers; s0 text otherwise
hrtimer_expire_entry        s0 function
workqueue_execute_*         s0 function
block_rq_*                  a0 sector, a1 sectors, s0 dev, s1 rwbs
jbd2_*                      a0 transaction, s0 dev
kvm_exit                    s0 reason
==========================  =====================================================
"""

from __future__ import annotations

from latscope.trace.fields import (
    HEX,
    INT,
    REST,
    STATE,
    STR,
    Alt,
    Key,
    Regex,
    Search,
    Spec,
)

# Kernel text (and trace-cmd's default output, which prints the same format strings).
#: sched_waking and its aliases as the kernel prints them (also one of trace-cmd's forms, below).
_WAKING_KEYS = (Key("comm=", STR, "s0", 16), Key(" pid=", INT, "a0"), Key(" prio=", INT, "a1"),
                Key(" target_cpu=", INT, "a2"))
TEXT_SPECS: dict[str, Spec] = {
    "sched_switch": (Key("prev_comm=", STR, "s0", 16), Key(" prev_pid=", INT, "a0"), Key(" prev_prio=", INT, "a2"),
                     Key(" prev_state=", STATE, "a4"), Key(" ==> next_comm=", STR, "s1", 16),
                     Key(" next_pid=", INT, "a1"), Key(" next_prio=", INT, "a3")),
    "sched_waking": _WAKING_KEYS,
    "sched_migrate_task": (Key("comm=", STR, "s0", 16), Key(" pid=", INT, "a0"), Key(" prio=", INT, "a1"),
                           Key(" orig_cpu=", INT, "a2"), Key(" dest_cpu=", INT, "a3")),
    "irq_handler_entry": (Key("irq=", INT, "a0"), Key(" name=", REST, "s0")),
    "irq_handler_exit": (Key("irq=", INT, "a0"),),
    "softirq_entry": (Key("vec=", INT, "a0"),),
    "net_dev_queue": (Key("dev=", STR, "s0"), Key(" skbaddr=", HEX, "a0"), Key(" len=", INT, "a1")),
    "net_dev_start_xmit": (Key("dev=", STR, "s0"), Key(" queue_mapping=", INT, "a2"), Key(" skbaddr=", HEX, "a0")),
    "net_dev_xmit": (Key("dev=", STR, "s0"), Key(" skbaddr=", HEX, "a0"), Key(" len=", INT, "a1")),
    "netif_rx": (Key("dev=", STR, "s0"), Key(" skbaddr=", HEX, "a0"), Key(" len=", INT, "a1")),
    "napi_gro_receive_entry": Regex(r"^dev=(?P<s0>\S+) .*?skbaddr=(?P<a0>\S+) .*? len=(?P<a1>\d+)",
                                    {"s0": STR, "a0": HEX, "a1": INT}),
    "skb_copy_datagram_iovec": (Key("skbaddr=", HEX, "a0"), Key(" len=", INT, "a1")),
    "kfree_skb": Regex(r"^skbaddr=(?P<a0>\S+) .*?reason: (?P<s0>\S+)", {"a0": HEX, "s0": STR}),
    "sk_data_ready": (Key("family=", INT, "a0"), Key(" protocol=", INT, "a1")),
    "napi_poll": (Key("napi poll on napi struct ", HEX, "a2"), Key(" for device ", STR, "s0"),
                  Key(" work ", INT, "a0"), Key(" budget ", INT, "a1")),
    "qdisc_dequeue": Regex(r"skbaddr=(?P<a0>\S+)", {"a0": HEX}),
    "hrtimer_expire_entry": Alt(((Key("hrtimer=", HEX, "a1"), Key(" function=", STR, "s0")),
                                 Regex(r"function=(?P<s0>[^\s/]+)", {"s0": STR}))),
    "workqueue_execute_start": (Key("work struct ", HEX, "a0"), Key(": function ", STR, "s0")),
    "block_rq_issue": Regex(r"^(?P<s0>\d+,\d+) (?P<s1>\S+) (?:\d+ )?\(.*?\) (?P<a0>\d+) \+ (?P<a1>\d+)",
                            {"s0": STR, "s1": STR, "a0": INT, "a1": INT}),
    "jbd2_start_commit": Regex(r"dev (?P<s0>\d+,\d+) transaction (?P<a0>\d+)", {"s0": STR, "a0": INT}),
    "kvm_exit": Regex(r"reason (?P<s0>\S+)", {"s0": STR}),
}
for _alias, _base in (("sched_wakeup", "sched_waking"), ("sched_wakeup_new", "sched_waking"),
                      ("softirq_raise", "softirq_entry"), ("softirq_exit", "softirq_entry"),
                      ("netif_receive_skb", "netif_rx"), ("netif_receive_skb_entry", "napi_gro_receive_entry"),
                      ("napi_gro_frags_entry", "napi_gro_receive_entry"), ("qdisc_enqueue", "qdisc_dequeue"),
                      ("workqueue_execute_end", "workqueue_execute_start"), ("block_rq_insert", "block_rq_issue"),
                      ("block_rq_complete", "block_rq_issue"), ("jbd2_end_commit", "jbd2_start_commit"),
                      ("jbd2_commit_locking", "jbd2_start_commit"), ("jbd2_commit_flushing", "jbd2_start_commit"),
                      ("jbd2_commit_logging", "jbd2_start_commit")):
    TEXT_SPECS[_alias] = TEXT_SPECS[_base]

# trace-cmd report's default output: its plugins rewrite some events.
TRACECMD_SPECS: dict[str, Spec] = dict(TEXT_SPECS)
TRACECMD_SPECS.update({
    "sched_switch": Regex(r"^(?P<s0>.+?):(?P<a0>-?\d+) \[(?P<a2>-?\d+)\] (?P<a4>\S+) ==> "
                          r"(?P<s1>.+?):(?P<a1>-?\d+) \[(?P<a3>-?\d+)\]",
                          {"s0": STR, "a0": INT, "a2": INT, "a4": STATE, "s1": STR, "a1": INT, "a3": INT}),
    # Older trace-cmd plugins print wakeups as "comm:pid [prio] success=1 CPU:001".
    "sched_wakeup": Alt((_WAKING_KEYS,
                         Regex(r"^(?P<s0>.+?):(?P<a0>\d+) \[(?P<a1>-?\d+)\](?: success=\d+)? CPU:(?P<a2>\d+)",
                               {"s0": STR, "a0": INT, "a1": INT, "a2": INT}))),
})
TRACECMD_SPECS["sched_waking"] = TRACECMD_SPECS["sched_wakeup"]
# trace-cmd prints the expiry time before the function ("now=... function=tick_nohz_handler/0x0").
TRACECMD_SPECS["hrtimer_expire_entry"] = Alt(((Key("hrtimer=", HEX, "a1"), Key(" now=", INT, "a0"),
                                               Key(" function=", STR, "s0")),
                                              Regex(r"function=(?P<s0>[^\s/]+)", {"s0": STR})))
TRACECMD_SPECS["sched_wakeup_new"] = TRACECMD_SPECS["sched_wakeup"]

# trace-cmd report -R: every event as its raw fields, "name=value" in format-file order.
def _find(**cols: tuple[str, str]) -> Search:
    return Search({c: (rf"(?:^|\s){key}=(\S+)", kind) for c, (key, kind) in cols.items()})


_RAW_NET = _find(a0=("skbaddr", HEX), a1=("len", INT), s0=("name", STR))
RAW_SPECS: dict[str, Spec] = {
    "sched_switch": _find(s0=("prev_comm", STR), a0=("prev_pid", INT), a2=("prev_prio", INT),
                          a4=("prev_state", STATE), s1=("next_comm", STR), a1=("next_pid", INT),
                          a3=("next_prio", INT)),
    "sched_waking": _find(s0=("comm", STR), a0=("pid", INT), a1=("prio", INT), a2=("target_cpu", INT)),
    "sched_migrate_task": _find(s0=("comm", STR), a0=("pid", INT), a1=("prio", INT), a2=("orig_cpu", INT),
                                a3=("dest_cpu", INT)),
    "irq_handler_entry": _find(a0=("irq", INT), s0=("name", STR)),
    "irq_handler_exit": _find(a0=("irq", INT)),
    "softirq_entry": _find(a0=("vec", INT)),
    "net_dev_queue": _RAW_NET, "net_dev_xmit": _RAW_NET, "netif_rx": _RAW_NET, "netif_receive_skb": _RAW_NET,
    "net_dev_start_xmit": _RAW_NET, "napi_gro_receive_entry": _RAW_NET,
    "skb_copy_datagram_iovec": _find(a0=("skbaddr", HEX), a1=("len", INT)),
    "sk_data_ready": _find(a0=("family", INT), a1=("protocol", INT)),
    "napi_poll": _find(s0=("dev_name", STR), a0=("work", INT), a1=("budget", INT)),
    "workqueue_execute_start": _find(s0=("function", STR)),
    "hrtimer_expire_entry": _find(s0=("function", STR)),
    "block_rq_issue": _find(s0=("dev", STR), a0=("sector", INT), a1=("nr_sector", INT), s1=("rwbs", STR)),
    "jbd2_start_commit": _find(s0=("dev", STR), a0=("transaction", INT)),
    "kvm_exit": _find(s0=("exit_reason", STR)),
    "kfree_skb": _find(a0=("skbaddr", HEX), s0=("reason", STR)),
    "qdisc_dequeue": Search({"a0": (r"skbaddr=(0x[0-9a-f]+)", HEX)}),
}
for _alias, _base in (("sched_wakeup", "sched_waking"), ("sched_wakeup_new", "sched_waking"),
                      ("softirq_raise", "softirq_entry"), ("softirq_exit", "softirq_entry"),
                      ("workqueue_execute_end", "workqueue_execute_start"), ("block_rq_insert", "block_rq_issue"),
                      ("block_rq_complete", "block_rq_issue"), ("jbd2_end_commit", "jbd2_start_commit")):
    RAW_SPECS[_alias] = RAW_SPECS[_base]
