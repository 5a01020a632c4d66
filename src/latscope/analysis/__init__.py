"""Derived metrics and statistics: pure functions over stored samples."""
