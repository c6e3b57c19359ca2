"""A rich progress bar with texts/s for long watermark detections (EXP/ITS permutation tests).

Example:
    >>> with detection_progress(200, 1000, enabled=False) as report:
    ...     report is None
    True
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

LONG_WORK = 50_000  # texts x resamples from which a detection counts as long (a few seconds or more)


@contextmanager
def detection_progress(texts: int, resamples: int, enabled: bool | None = None
                       ) -> Iterator[Callable[[float], None] | None]:
    """A callback `report(texts_done)` that drives a bar on stderr, or None when no bar is shown.

    enabled None: show it when stderr is a terminal and the work (texts x resamples) is long.
    """
    if enabled is None:
        enabled = texts * max(resamples, 1) >= LONG_WORK and sys.stderr.isatty()
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("detect"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} texts"),
               TextColumn("{task.fields[rate]} texts/s"), TimeElapsedColumn(), TimeRemainingColumn())
    start = time.perf_counter()
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("detect", total=texts, rate="-")

        def report(done: float) -> None:
            elapsed = time.perf_counter() - start
            bar.update(task, completed=done, rate=f"{done / elapsed:.1f}" if elapsed > 0 else "-")

        yield report
