"""Kernel traces: capture during a run, parsers, per-CPU timeline, per-packet breakdown, Perfetto export."""
