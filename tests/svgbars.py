"""Bar geometry out of a report's inline SVG: a figure's bars carry ids, their paths the drawn sizes."""

from __future__ import annotations

import re


def bar_sizes(svg: str, prefix: str) -> dict[str, tuple[float, float]]:
    """id -> (width, height) of every bar whose group id starts with ``prefix`` (matplotlib's set_gid)."""
    out = {}
    for m in re.finditer(r'<g id="(' + re.escape(prefix) + r'[^"]*)">\s*<path d="([^"]+)"', svg):
        nums = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", m.group(2))]
        xs, ys = nums[0::2], nums[1::2]
        out[m.group(1)] = (max(xs) - min(xs), max(ys) - min(ys))
    return out
