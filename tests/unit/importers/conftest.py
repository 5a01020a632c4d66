"""Paths of the recorded real files the importer tests parse."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
IMPORT = FIXTURES / "import"
ISOCHRON_DAT = FIXTURES / "isochron" / "veth-l4-2000.dat"
ISOCHRON_CSV = FIXTURES / "isochron" / "veth-l4-2000.csv"
