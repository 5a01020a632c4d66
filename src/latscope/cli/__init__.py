"""The `latscope` command: one module per verb."""
