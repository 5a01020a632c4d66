"""`latscope report RUN... -o report.html`: one self-contained HTML file with tables and figures."""

from __future__ import annotations

from pathlib import Path

import click

from latscope.analysis.compare import Settings
from latscope.analysis.runview import RunView
from latscope.cli.common import DURATION, results_option, store_from
from latscope.cli.ranges import make_range, range_options


@click.command()
@click.argument("run_refs", metavar="RUN...", nargs=-1, required=True)
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("report.html"), show_default=True, help="The HTML file to write.")
@click.option("--png", "png_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="Also write every figure as a PNG file into DIR.")
@click.option("--title", default="latscope report", show_default=True, help="Title of the report.")
@range_options
@click.option("--min-effect", "min_effect_ns", type=DURATION, default="1us", show_default=True, metavar="DURATION",
              help="Smallest latency difference that counts as a difference in the comparison.")
@click.option("--bootstrap", "resamples", type=click.IntRange(100, 100_000), default=1000, show_default=True,
              help="Block-bootstrap resamples per run.")
@results_option
def report(run_refs: tuple[str, ...], output: Path, png_dir: Path | None, title: str, range_from: int | None,
           range_to: int | None, skip_warmup: int | None, min_effect_ns: int, resamples: int,
           results: str | None) -> None:
    """Write an HTML report of runs (the first is the baseline of the comparison)."""
    from latscope.report import html  # matplotlib loads only for this verb

    rng = make_range(range_from, range_to, skip_warmup)
    store = store_from(results)
    views = [RunView.open(store.resolve(ref), rng) for ref in run_refs]
    data = html.build(views, Settings(resamples=resamples, min_effect_ns=float(min_effect_ns)), title,
                      keep_png=png_dir is not None)
    html.write(html.render(data), output)
    click.echo(f"wrote {output}")
    if png_dir is not None:
        for path in html.write_pngs(data.pngs, png_dir):
            click.echo(f"wrote {path}")
