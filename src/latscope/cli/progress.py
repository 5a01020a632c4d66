"""A progress bar on stderr for long runs; silent when stderr is not a terminal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from latscope.cli.common import stderr_is_tty

MIN_SECONDS = 3.0


@contextmanager
def packet_progress(total: int, expected_s: float, quiet: bool, label: str = "measuring") -> Iterator:
    """Yield a callback(sent, received, total) that drives a bar, or a no-op when not wanted."""
    if quiet or expected_s < MIN_SECONDS or not stderr_is_tty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("rx {task.fields[rx]}"), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True,
    )
    task = progress.add_task(label, total=total, rx=0)

    def update(sent: int, received: int, _total: int) -> None:
        progress.update(task, completed=sent, rx=received)

    with progress:
        yield update
