"""The measurement hot path: wire format, clocks, sockets, sender and receiver."""
