"""`run_job`: read the rows, skip those already written, run the rest, merge, summarise.

Example:
    >>> import json, pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "in.jsonl").write_text('{"prompt": "hi"}\\n{"prompt": "yo"}\\n')
    >>> spec = JobSpec("generate", model="tiny-random", options={"max_new_tokens": 3, "temperature": 1.0})
    >>> summary = run_job(spec, folder / "in.jsonl", folder / "out.jsonl", progress=False)
    >>> summary.processed, summary.failed
    (2, 0)
    >>> run_job(spec, folder / "in.jsonl", folder / "out.jsonl", progress=False).processed   # a rerun
    0
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidOption
from .local import run_local
from .rows import read_rows
from .store import Store, is_error
from .tasks import JobSpec

MAX_WORKERS = 256


@dataclass
class BatchSummary:
    """What a run did: rows in the input, rows already done before it, rows it ran, failures by
    reason, worker restarts (local workers), wall time and new tokens (generate)."""

    rows: int = 0
    already_done: int = 0
    processed: int = 0
    failed: int = 0
    failures: Counter = field(default_factory=Counter)
    restarts: int | None = None
    requeued: int | None = None
    wall_time: float = 0.0
    new_tokens: int = 0
    output: str = ""

    def add(self, record: dict[str, Any]) -> None:
        self.processed += 1
        if is_error(record):
            self.failed += 1
            self.failures[f"{record['error']['type']}: {record['error']['message']}"] += 1
        else:
            self.new_tokens += int((record.get("stats") or {}).get("new_tokens") or 0)

    @property
    def rows_per_second(self) -> float:
        return self.processed / self.wall_time if self.wall_time > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "already_done": self.already_done, "processed": self.processed,
                "failed": self.failed, "failures": dict(self.failures), "restarts": self.restarts,
                "requeued": self.requeued, "wall_time": self.wall_time, "rows_per_second": self.rows_per_second,
                "new_tokens": self.new_tokens, "output": self.output}

    def lines(self, max_reasons: int = 5) -> list[str]:
        """The summary as text lines (what the CLI prints)."""
        out = [f"{self.rows} rows: {self.processed} run now ({self.failed} failed), {self.already_done} already "
               f"in {self.output}; {self.wall_time:.1f} s, {self.rows_per_second:.2f} rows/s"
               + (f", {self.new_tokens / self.wall_time:.1f} new tokens/s" if self.new_tokens and self.wall_time else "")]
        if self.restarts:
            out.append(f"workers restarted {self.restarts} time(s); {self.requeued} row(s) run again")
        for reason, count in self.failures.most_common(max_reasons):
            out.append(f"  {count} x {reason}")
        if len(self.failures) > max_reasons:
            out.append(f"  ... and {len(self.failures) - max_reasons} other reason(s) (see the error records)")
        return out


def run_job(spec: JobSpec, input: str | Path, output: str | Path, *, workers: int = 1, ray: str | None = None,
            retry_errors: bool = False, overwrite: bool = False, progress: bool = True,
            on_record: Callable[[dict[str, Any]], None] | None = None) -> BatchSummary:
    """Run a batch job: one record per input row in `output` (JSONL, in input order), each row once.

    `workers`: local worker processes (1: in this process) or, with `ray` ("local" or a cluster
    address), Ray actors. Rows already in `output` (or in part files a killed run left) are
    skipped; `retry_errors` runs rows with error records again; `overwrite` starts afresh.
    `on_record(record)` is called on each new record (after it is written)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise InvalidOption(f"workers must be an integer in [1, {MAX_WORKERS}], got {workers!r}")
    if Path(input).resolve() == Path(output).resolve():
        raise InvalidOption("the output must be another file than the input")
    rows = read_rows(input)
    store = Store(output)
    store.check_job(spec.describe(), overwrite=overwrite)
    done = store.done(retry_errors=retry_errors)
    pending = [r for r in rows if r.key not in done]
    summary = BatchSummary(rows=len(rows), already_done=len(rows) - len(pending), output=str(output))
    started = time.perf_counter()
    if pending:
        with store.writer() as write, _Progress(progress, len(pending), spec.task) as advance:
            def handle(record: dict[str, Any]) -> None:
                write(record)
                summary.add(record)
                advance()
                if on_record is not None:
                    on_record(record)

            if ray is not None:
                from .ray_backend import run_ray

                counters = run_ray(spec, pending, workers, ray, handle)
            else:
                counters = run_local(spec, pending, workers, handle)
        summary.restarts, summary.requeued = counters.get("restarts"), counters.get("requeued")
    if pending or store.parts.exists() or not store.output.exists():
        store.merge(order=[r.key for r in rows])
    summary.wall_time = time.perf_counter() - started
    return summary


class _Progress:
    """A rich progress bar with rows/s and ETA on stderr, or nothing."""

    def __init__(self, enabled: bool, total: int, label: str):
        self.enabled, self.total, self.label = enabled, total, label
        self.bar = None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn(f"batch {self.label}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn(),
                            console=Console(stderr=True))
        self.bar.__enter__()
        task = self.bar.add_task("", total=self.total, rate="")
        started = time.perf_counter()
        done = 0

        def advance() -> None:
            nonlocal done
            done += 1
            self.bar.update(task, advance=1, rate=f"{done / max(time.perf_counter() - started, 1e-9):.2f} rows/s")

        return advance

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
