"""Local workers: one process per worker, one model per process, rows dealt one at a time.

The parent keeps the queue of rows and knows which row each worker holds. A worker that dies
(killed, out of memory) is replaced and its row goes back to the front of the queue; a row that
takes down a worker twice gets an error record instead of a third try. Workers only compute:
the parent writes every record (see `store`), so a dying worker cannot leave half a record.
With one worker the rows run in this process (no model is loaded twice).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from typing import Any

from ..errors import DecodelabError
from .rows import Row
from .tasks import JobSpec, build_task

MAX_ROW_ATTEMPTS = 2  # a row that kills its worker this many times gets an error record
MAX_EXTRA_RESTARTS = 8  # worker deaths allowed beyond those rows explain (each row: MAX_ROW_ATTEMPTS)

OnRecord = Callable[[dict[str, Any]], None]


class WorkerLost(DecodelabError):
    """Local workers kept dying without a row to blame (e.g. out of memory while loading)."""

    http_status = 500


def threads_per_worker(spec: JobSpec, workers: int) -> int:
    """The job's threads, or the machine's cores shared among the workers."""
    return spec.threads or max(1, (os.cpu_count() or 1) // workers)


def run_local(spec: JobSpec, rows: list[Row], workers: int, on_record: OnRecord) -> dict[str, int]:
    """Run every row on `workers` local workers; `on_record` receives each record in this
    process. Returns counters: worker restarts and rows put back in the queue."""
    if workers == 1:
        import torch

        threads = torch.get_num_threads()
        try:
            task = build_task(spec)
            for row in rows:
                on_record(task.record(row))
        finally:
            torch.set_num_threads(threads)  # process-wide: give the caller back its setting
        return {"restarts": 0, "requeued": 0}
    return _Pool(replace(spec, threads=threads_per_worker(spec, workers)), workers).run(rows, on_record)


def _worker_main(spec: JobSpec, conn: Connection) -> None:
    """A worker process: load the model, then answer each row with its record until told to stop."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    try:
        task = build_task(spec)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the job
        conn.send(("fatal", exc if isinstance(exc, DecodelabError) else DecodelabError(f"{type(exc).__name__}: {exc}")))
        return
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        conn.send(("record", task.record(Row.from_json(message))))


@dataclass
class _Worker:
    process: Any
    conn: Connection
    row: Row | None = None
    ready: bool = False


class _Pool:
    def __init__(self, spec: JobSpec, size: int):
        self.spec = spec
        self.size = size
        # a fork server: a fresh process that imported decodelab once and never ran torch threads,
        # so that forking from it is safe and fast (also when a dead worker is replaced)
        self.context = mp.get_context("forkserver")
        self.context.set_forkserver_preload(["decodelab.batch.preload"])
        self.workers: list[_Worker] = []
        self.counters = {"restarts": 0, "requeued": 0}

    def _start(self) -> _Worker:
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_worker_main, args=(self.spec, child), daemon=True,
                                       name="decodelab-batch-worker")
        process.start()
        child.close()
        return _Worker(process, parent)

    def run(self, rows: list[Row], on_record: OnRecord) -> dict[str, int]:
        pending = deque(rows)
        attempts: Counter[str] = Counter()
        self.workers = [self._start() for _ in range(self.size)]
        try:
            while pending or any(w.row is not None for w in self.workers):
                for w in self.workers:
                    if w.ready and w.row is None and pending:
                        w.row = pending.popleft()
                        try:
                            w.conn.send(w.row.as_json())
                        except OSError:  # the worker just died: its sentinel fires and the row goes back
                            pass
                waiting = [w.conn for w in self.workers] + [w.process.sentinel for w in self.workers]
                ready = wait(waiting)
                for i, w in enumerate(self.workers):
                    if w.conn not in ready and w.process.sentinel not in ready:
                        continue
                    if self._drain(w, on_record):
                        continue
                    # the worker is gone: its row goes back (or fails), a new worker takes its place
                    w.process.join()
                    if w.row is not None:
                        attempts[w.row.key] += 1
                        if attempts[w.row.key] >= MAX_ROW_ATTEMPTS:
                            on_record({"id": w.row.id, "error": {
                                "type": "WorkerDied",
                                "message": f"the worker died while running this row ({MAX_ROW_ATTEMPTS} attempts)"}})
                        else:
                            pending.appendleft(w.row)
                            self.counters["requeued"] += 1
                    self.counters["restarts"] += 1
                    if self.counters["restarts"] > MAX_ROW_ATTEMPTS * len(rows) + MAX_EXTRA_RESTARTS:
                        raise WorkerLost(f"local workers died {self.counters['restarts']} times; giving up")
                    self.workers[i] = self._start()
        finally:
            self._stop()
        return self.counters

    def _drain(self, w: _Worker, on_record: OnRecord) -> bool:
        """Handle what the worker sent; False when it is dead."""
        try:
            while w.conn.poll():
                kind, value = w.conn.recv()
                if kind == "fatal":
                    raise value
                if kind == "ready":
                    w.ready = True
                else:
                    w.row = None
                    on_record(value)
        except (EOFError, OSError):
            return False
        return w.process.is_alive()

    def _stop(self) -> None:
        for w in self.workers:
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass
        for w in self.workers:
            w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
