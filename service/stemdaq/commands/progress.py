"""The live progress bar of ``stemdaq acquire`` (local engine) and ``stemdaq watch`` (API)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def follow(
    get: Callable[[], Any],
    label: str,
    poll: float = 0.2,
    console: Console | None = None,
    wait: Callable[[float], object] | None = None,
) -> Any:
    """Poll ``get()`` (anything with state, frames_written/expected/dropped, frames_per_second,
    elapsed_seconds) and draw a rich progress bar until its state is final; return the last value.

    While it runs the bar shows the current rate; at the end, the average over the series.
    ``wait(poll)`` (e.g. the engine's own ``wait``) returns as soon as it is done, so the
    command ends when the file is closed, not up to ``poll`` s later.
    """
    pause = wait or time.sleep
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.0f} frames/s  dropped {task.fields[dropped]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console or Console(stderr=True)) as progress:
        item = get()
        task = progress.add_task(label, total=item.frames_expected or None, rate=0.0, dropped=0)
        while True:
            progress.update(
                task,
                description=f"{label} {item.state.value}",
                completed=item.frames_written,
                total=item.frames_expected or None,
                rate=average_rate(item) if item.state.is_final else item.frames_per_second,
                dropped=item.frames_dropped,
            )
            if item.state.is_final:
                return item
            pause(poll)
            item = get()


def average_rate(item: Any) -> float:
    """Frames written per second over the whole series (0 before it started)."""
    elapsed = float(getattr(item, "elapsed_seconds", 0.0) or 0.0)
    return item.frames_written / elapsed if elapsed > 0 else 0.0
