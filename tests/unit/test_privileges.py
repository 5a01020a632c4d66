"""What latscope may do is read from the effective capability set."""

from __future__ import annotations

import pytest

from latscope import privileges
from latscope.errors import PrivilegeError


def test_raw_ethernet_needs_cap_net_raw_and_nothing_else_does() -> None:
    """--l2 is refused without CAP_NET_RAW (naming it); UDP needs no capability; CAP_NET_RAW alone is enough."""
    with pytest.raises(PrivilegeError, match="CAP_NET_RAW"):
        privileges.require_raw_sockets("packet", caps=0)
    privileges.require_raw_sockets("packet", caps=1 << privileges.CAP_NET_RAW)
    for family in ("inet", "inet6"):
        privileges.require_raw_sockets(family, caps=0)
