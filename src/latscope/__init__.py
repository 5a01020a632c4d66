"""latscope: measure, explain and compare the network latency of Linux systems."""

__version__ = "0.1.0"
