"""`latscope report`: one self-contained HTML file that headless chromium renders with its figures."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from tests.support import synthetic_run

pytestmark = pytest.mark.slow  # the module's report takes ~20 s to build

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class _Refs(HTMLParser):
    """Collects every URL-bearing attribute and element names."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href", "action", "poster", "data")]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two runs (the second 6 µs slower, with a spike and an empty trace), reported with --png."""
    import os

    root = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(0)
    a = (50_000 + 1_000 * rng.standard_normal(8_000)).astype(np.int64)
    a[5_000] += 250_000
    b = (56_000 + 1_000 * rng.standard_normal(8_000)).astype(np.int64)
    b[3_000:3_020] += 20_000_000 - np.arange(20) * 1_000_000
    ra = synthetic_run(root, a, name="bridge")
    rb = synthetic_run(root, b, name="macvlan", environment={"before": {"kernel": {"release": "6.18"}}})
    (rb.path / "trace").mkdir()
    out_dir = tmp_path_factory.mktemp("out")
    html, pngs = out_dir / "report.html", out_dir / "png"
    env = {**os.environ, "LATSCOPE_RESULTS": str(root)}
    bin_dir = Path(__import__("sys").executable).parent
    done = subprocess.run([str(bin_dir / "latscope"), "report", ra.run_id, rb.run_id, "-o", str(html),
                           "--png", str(pngs), "--bootstrap", "200"], capture_output=True, text=True, env=env,
                          timeout=180)
    assert done.returncode == 0, done.stderr
    return html, pngs, root


def test_one_self_contained_file(report: tuple[Path, Path, Path]) -> None:
    """No src/href leaves the file, a CSP forbids fetching, no script or stylesheet link exists."""
    text = report[0].read_text(encoding="utf-8")
    refs = _Refs()
    refs.feed(text)
    assert all(u.startswith(("#", "data:")) for u in refs.urls), [u for u in refs.urls if not u.startswith("#")]
    assert "script" not in refs.tags and "link" not in refs.tags and "iframe" not in refs.tags
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert "@import" not in text
    # SVG clip paths refer to elements of the page itself (url(#id)); nothing else may be a url().
    assert re.findall(r"url\((?!#)", text) == []


def test_sections_and_figures(report: tuple[Path, Path, Path]) -> None:
    """Summary, comparison, tail, both runs with their figure, anomalies, breakdown note, environment differences."""
    text = report[0].read_text(encoding="utf-8")
    refs = _Refs()
    refs.feed(text)
    # per run 1 series+histogram, 1 shift, 1 ccdf, 1 inter-arrival
    assert refs.tags.get("svg", 0) == 5
    for needle in ('id="summary"', 'id="comparison"', 'id="tail"', 'id="inter-arrival"', 'id="environment"',
                   "macvlan against bridge", "held_burst", "could not be broken down",
                   "environment.before.kernel.release"):
        assert needle in text, needle
    assert '<td class="l higher">higher' in text


def test_recorded_trace_gets_the_breakdown_latscope_breakdown_gives(latscope, results: Path) -> None:
    """A run with its kernel trace (the captured fixture): the report shows the breakdown's own numbers."""
    from tests.unit.trace.conftest import FIXTURES

    run = results / "20261125-123843-59d3fe"
    (run / "trace").mkdir(parents=True)
    shutil.copy(FIXTURES / "veth-run.run.json", run / "run.json")
    shutil.copy(FIXTURES / "veth-run.samples.parquet", run / "samples.parquet")
    shutil.copy(FIXTURES / "veth-run.txt", run / "trace" / "trace.txt")
    bd = latscope("breakdown", run.name, "--json")
    assert bd.returncode == 0, bd.stderr
    doc = json.loads(bd.stdout)
    out = results.parent / "traced.html"
    r = latscope("report", run.name, "-o", str(out), "--bootstrap", "200", timeout=180)
    assert r.returncode == 0, r.stderr
    text = out.read_text(encoding="utf-8")
    section = text.split("<h3>Trace breakdown</h3>")[1].split("<h2")[0]
    assert "Computed for this report as latscope breakdown does by default: judged on e2e" in section
    # the parameters as a sentence, with the breakdown's own numbers (no `key: value` dump)
    assert f"above {doc['threshold_us']:.3f} µs, the run&#39;s 99th percentile" in section
    assert f"{doc['late_count']} of {doc['packets']} packets" in section
    assert f"{doc['late_broken_down']} broken down" in section and "late_count:" not in section


def test_png_figures(report: tuple[Path, Path, Path]) -> None:
    """--png writes every figure as a real PNG file."""
    files = sorted(p.name for p in report[1].iterdir())
    assert len(files) == 5 and "tail-ccdf.png" in files and "inter-arrival.png" in files
    assert all((report[1] / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in files)


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_renders_in_headless_chromium(report: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Chromium parses the page into a DOM with all five figures and their drawn paths, and paints it."""
    html = report[0]
    dom = _chromium(["--dump-dom", html.as_uri()], tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr[-2000:]
    refs = _Refs()
    refs.feed(dom.stdout)
    assert refs.tags.get("svg", 0) == 5 and refs.tags.get("path", 0) > 100
    assert "Latency tail" in dom.stdout and "macvlan against bridge" in dom.stdout
    shot = tmp_path / "shot.png"
    painted = _chromium(["--hide-scrollbars", "--window-size=1200,3000", f"--screenshot={shot}", html.as_uri()],
                        tmp_path / "profile2")
    assert painted.returncode == 0 and shot.exists()
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    # A blank page is one colour; a page with figures has many distinct ones.
    assert len(np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50


@pytest.mark.root
@pytest.mark.tracefs
def test_traced_run_gets_its_breakdown(latscope, tmp_path: Path) -> None:
    """A run recorded with --trace: the report computes the breakdown and shows its culprits table."""
    made = latscope("run", "--trace", "--count", "1500", "--period", "1ms", "-q", "--json", timeout=180)
    assert made.returncode == 0, made.stderr
    html = tmp_path / "traced.html"
    out = latscope("report", "latest", "-o", str(html), "--bootstrap", "200", timeout=180)
    assert out.returncode == 0, out.stderr
    text = html.read_text(encoding="utf-8")
    section = text.split("<h3>Trace breakdown</h3>")[1].split("<h2")[0]
    bd = latscope("breakdown", "latest", "--json")
    assert bd.returncode == 0, bd.stderr
    doc = json.loads(bd.stdout)
    assert doc["late_broken_down"] > 0 and f"{doc['late_count']} of {doc['packets']} packets" in section
    # the three figures, drawn from the same breakdown: culprit bars as long as their total delays
    for key in ("stages", "culprits", "timeline"):
        assert re.search(rf'<figure id="run1-[^"]*-breakdown-{key}"><svg', section), key
    from tests.svgbars import bar_sizes

    bars = bar_sizes(section, "culprit-")
    totals = [c["total_us"] for c in doc["culprits"][:len(bars)]]
    assert len(bars) == min(15, len(doc["culprits"])) and totals[0] > 0
    for i, total in enumerate(totals):
        assert abs(bars[f"culprit-{i}"][0] / bars["culprit-0"][0] - total / totals[0]) < 0.01
    drawn = [h for _w, h in bar_sizes(section, "excess-0-").values() if h > 0]
    assert len(drawn) == sum(s["excess_us"] > 0 for s in doc["late_packets"][0]["stages"])
    # the same breakdown as a Perfetto file: nothing its importer would drop or misnest (a real, long trace)
    from latscope.trace.perfetto import problems

    pf = latscope("breakdown", "latest", "--perfetto", str(tmp_path / "p.json"))
    assert pf.returncode == 0, pf.stderr
    assert problems(json.loads((tmp_path / "p.json").read_text())) == []
    if CHROMIUM is not None:
        dom = _chromium(["--dump-dom", html.as_uri()], tmp_path / "profile")
        assert dom.returncode == 0, dom.stderr[-2000:]
        refs = _Refs()
        refs.feed(dom.stdout)
        assert refs.tags.get("svg", 0) == 6 and 'id="culprit-0"' in dom.stdout  # latency, tail, delta + 3
