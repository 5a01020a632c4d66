"""What the host is: collected before (and after) each run and shown by `latscope doctor`."""

from latscope.env.collect import collect_environment

__all__ = ["collect_environment"]
