"""Checking a hello's configuration: every field by type and range before anything uses it.

The hello is the only place the receiver learns how many packets to expect,
how far apart and from when: it sizes memory from the count and fills the
schedule of lost packets from base time and period. A field of the wrong type
or out of range makes the whole hello foreign; keys latscope does not know
are dropped, so nothing unchecked reaches run.json.
"""

from __future__ import annotations

from typing import Any

from latscope.errors import ConfigError
from latscope.probe import wire
from latscope.probe.config import MAX_COUNT, MAX_PERIOD_NS, MIN_PERIOD_NS
from latscope.safetext import check_name, check_tags
from latscope.units import MAX_DURATION_NS

MAX_BASE_TIME_NS = 2**62  # year 2116
_INT64_MAX = 2**63 - 1
#: Host names, kernel releases and run ids are short; a longer one is not a sender's.
MAX_TEXT = 256


def _int(lo: int, hi: int):
    def check(v: Any) -> bool:
        # bool is an int subclass: {"count": true} is not a count.
        return type(v) is int and lo <= v <= hi
    return check


def _optional(check):
    return lambda v: v is None or check(v)


def _text(v: Any) -> bool:
    return isinstance(v, str) and len(v) <= MAX_TEXT and v.isprintable()


def _name(v: Any) -> bool:
    """What `--name` accepts on the sender's side (safetext), so names cannot differ in what passes."""
    try:
        return isinstance(v, str) and check_name(v) is not None
    except ConfigError:
        return False


def _tags(v: Any) -> bool:
    try:
        return isinstance(v, list) and all(isinstance(t, str) for t in v) and check_tags(v) is not None
    except ConfigError:
        return False


REQUIRED = {
    "period_ns": _int(MIN_PERIOD_NS, MAX_PERIOD_NS),
    "count": _int(1, MAX_COUNT),
    "size": _int(wire.MIN_SIZE, wire.MAX_SIZE),
    "base_time_ns": _int(1, MAX_BASE_TIME_NS),
}
OPTIONAL = {
    "run_id": _text,
    "spin_ns": _optional(_int(0, MAX_PERIOD_NS)),
    "tos": _optional(_int(0, 255)),
    "so_priority": _optional(_int(0, 2**32 - 1)),
    "family": _optional(lambda v: v in ("inet", "inet6", "packet")),
    "vid": _optional(_int(0, 4094)),
    "pcp": _optional(_int(0, 7)),
    "txtime_offset_ns": _optional(_int(0, MAX_PERIOD_NS)),
    "cpu": _optional(_int(0, 65_535)),
    "prio": _optional(_int(1, 99)),
    "name": _name,
    "tags": _tags,
    "host": _text,
    "kernel": _text,
    # A VM leg: which way the stream goes (session.py adds it).
    "direction": _optional(lambda v: v in ("forward", "reverse")),
}


def checked(doc: Any) -> dict[str, Any] | None:
    """The hello's known fields when every one is valid, else None (the hello is foreign)."""
    if not isinstance(doc, dict):
        return None
    out: dict[str, Any] = {}
    for key, check in REQUIRED.items():
        if key not in doc or not check(doc[key]):
            return None
        out[key] = doc[key]
    for key, check in OPTIONAL.items():
        if key in doc:
            if not check(doc[key]):
                return None
            out[key] = doc[key]
    span = out["count"] * out["period_ns"]
    if span > MAX_DURATION_NS or out["base_time_ns"] + span > _INT64_MAX:
        return None
    return out
