"""Where a job's records go: part files while it runs, one output file when it ends.

Exactly once, by construction rather than by trusting the scheduler:

- Records are appended to a part file (`<output>.parts/part-<run>.jsonl`), one complete JSON
  line per row, flushed as each arrives. A run that is killed leaves at most one partial last
  line, which readers ignore.
- A row counts as done when a record with its id is in the output or in a part file, so a rerun
  skips it. A row that ran twice (a retried task, a worker killed after it reported) yields two
  records with the same id; they are equal because a row's output is a function of the row and
  the job (see `rows.row_seed`).
- `merge` reads the output and every part file, keeps one record per id (a result beats an error
  record, otherwise the first), orders them as the input, writes a temporary file, fsyncs it and
  renames it over the output (atomic on POSIX), then deletes the parts.

Example:
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "out.jsonl"
    >>> store = Store(out)
    >>> with store.writer() as write:
    ...     write({"id": 2, "text": "b"}); write({"id": 1, "text": "a"}); write({"id": 2, "text": "b"})
    >>> store.merge(order=["1", "2"])
    2
    >>> out.read_text().splitlines()
    ['{"id": 1, "text": "a"}', '{"id": 2, "text": "b"}']
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import InvalidOption
from .rows import id_key


def is_error(record: dict[str, Any]) -> bool:
    return "error" in record


class Store:
    """The output file of a job, its part files and its job description."""

    def __init__(self, output: str | Path):
        self.output = Path(output)
        self.parts = self.output.with_name(self.output.name + ".parts")
        self.job_file = self.output.with_name(self.output.name + ".job.json")

    def check_job(self, description: dict[str, Any], *, overwrite: bool = False) -> None:
        """Remember what job writes this output; a rerun must be the same job (else its rows would
        mix with another job's), unless `overwrite` starts afresh."""
        if overwrite:
            self.output.unlink(missing_ok=True)
            shutil.rmtree(self.parts, ignore_errors=True)
        elif self.job_file.exists() and (self.output.exists() or self.parts.exists()):
            try:
                previous = json.loads(self.job_file.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                previous = None
            if previous != description:
                raise InvalidOption(f"{self.output} was written by a different job (task, model, options or seed "
                                    f"differ; see {self.job_file.name}): use another --output, or --overwrite")
        elif self.output.exists() and not self.job_file.exists():
            raise InvalidOption(f"{self.output} exists and was not written by a batch job: use another --output, "
                                "or --overwrite")
        self.output.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.job_file, [json.dumps(description, sort_keys=True)])

    def records(self) -> Iterator[dict[str, Any]]:
        """Every complete record: the output's, then the part files' (partial lines skipped)."""
        files = ([self.output] if self.output.exists() else []) + sorted(self.parts.glob("part-*.jsonl"))
        for path in files:
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    if not line.endswith("\n"):
                        break  # a run killed while writing this line
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(record, dict) and "id" in record:
                        yield record

    def done(self, *, retry_errors: bool = False) -> set[str]:
        """Ids that have a record (with `retry_errors`, only those with a result)."""
        return {id_key(r["id"]) for r in self.records() if not (retry_errors and is_error(r))}

    @contextmanager
    def writer(self) -> Iterator[Callable[[dict[str, Any]], None]]:
        """A function that appends one record to this run's own part file (made at the first
        record, so that a run that fails before any row leaves nothing behind)."""
        path = self.parts / f"part-{uuid.uuid4().hex}.jsonl"
        handle = None

        def write(record: dict[str, Any]) -> None:
            nonlocal handle
            if handle is None:
                self.parts.mkdir(parents=True, exist_ok=True)
                handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed below
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()

        try:
            yield write
        finally:
            if handle is not None:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()

    def merge(self, order: list[str]) -> int:
        """Write one record per id into the output, in `order` (ids not in it follow in the order
        found), atomically; then remove the part files. Returns the number of records."""
        best: dict[str, dict[str, Any]] = {}
        for record in self.records():
            key = id_key(record["id"])
            if key not in best or (is_error(best[key]) and not is_error(record)):
                best[key] = record
        position = {key: i for i, key in enumerate(order)}
        keys = sorted(best, key=lambda k: position.get(k, len(order)))
        _write_atomic(self.output, [json.dumps(best[k], ensure_ascii=False) for k in keys])
        shutil.rmtree(self.parts, ignore_errors=True)
        return len(keys)


def _write_atomic(path: Path, lines: list[str]) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
