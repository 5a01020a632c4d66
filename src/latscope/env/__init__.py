"""What the host is: collected before (and after) each run and shown by `latscope doctor`.

``collect_environment`` is imported on first use: the probe workers use
``latscope.env.ethtool`` alone and must not load every collector with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from latscope.env.collect import collect_environment

__all__ = ["collect_environment"]


def __getattr__(name: str) -> Any:
    if name == "collect_environment":
        from latscope.env.collect import collect_environment

        return collect_environment
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
