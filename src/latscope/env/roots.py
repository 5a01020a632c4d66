"""The filesystem roots collectors read, so tests can point them at a temporary tree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Roots:
    """Where /proc, /sys, /dev and tracefs are."""

    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    dev: Path = Path("/dev")
    tracefs: Path = Path("/sys/kernel/tracing")

    def read(self, path: Path) -> str | None:
        """File content stripped, or None when it cannot be read."""
        try:
            return path.read_text(errors="replace").strip()
        except OSError:
            return None


DEFAULT = Roots()
