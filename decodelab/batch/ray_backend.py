"""Ray: Ray Data `map_batches` over long-lived actors, one model replica per actor.

Ray schedules, restarts dead actors and retries their tasks (Ray Data's actor pools default to
unlimited restarts and task retries); it gives no exactly-once write, so actors only compute and
return records, and the driver writes them to its part file as they stream back (see `store`):
a retried row at worst yields a second, equal record, which the merge drops. Because the driver
writes, the output needs no filesystem shared with the cluster's nodes; the nodes need decodelab
(and the model packs) installed.

`address`: "local" starts a Ray instance on this machine (or uses the one already started in
this process); anything else is given to `ray.init(address=...)`, e.g. "auto" or "ray://host:10001".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from ..errors import DecodelabError, InvalidOption
from .rows import Row
from .tasks import JobSpec, build_task

BLOCKS_PER_WORKER = 32  # rows are split into about this many blocks per actor (balance vs overhead)
EXTRA_HINT = 'Ray is an optional extra: pip install "decodelab[ray]"'


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InvalidOption(f"--ray needs Ray Data, which is not installed ({EXTRA_HINT})") from None
    return ray


JOB_ERROR = "__job_error__"  # what an actor answers when the job itself is wrong (bad options, unknown model)


class RowWorker:
    """A Ray Data actor: loads the model once, then turns batches of rows into records. A job
    error (a DecodelabError while loading) is answered for every row and raised by the driver:
    raised here, Ray would only report that the actor died."""

    def __init__(self, spec: JobSpec):
        self.task, self.failure = None, None
        try:
            self.task = build_task(spec)
        except DecodelabError as exc:
            self.failure = {"type": type(exc).__name__, "message": str(exc)}

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        if self.failure is not None:
            records = [json.dumps({JOB_ERROR: self.failure})] * len(batch["row"])
        else:
            records = [json.dumps(self.task.record(Row.from_json(text)), ensure_ascii=False) for text in batch["row"]]
        return {"record": np.array(records, dtype=object)}


def run_ray(spec: JobSpec, rows: list[Row], workers: int, address: str,
            on_record: Callable[[dict[str, Any]], None]) -> dict[str, int]:
    """Run every row on `workers` Ray actors; `on_record` receives each record on the driver."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        started = True
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # our own progress bar and summary report
        blocks = max(1, min(len(rows), workers * BLOCKS_PER_WORKER))
        dataset = ray.data.from_items([{"row": r.as_json()} for r in rows], override_num_blocks=blocks)
        dataset = dataset.map_batches(RowWorker, fn_constructor_args=(spec,), batch_size=None, batch_format="numpy",
                                      compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=spec.threads or 1)
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for text in batch["record"]:
                record = json.loads(text)
                if JOB_ERROR in record:
                    raise job_error(**record[JOB_ERROR])
                on_record(record)
    finally:
        if started:
            ray.shutdown()
    return {}  # Ray restarts actors and retries tasks itself and does not report how often


def job_error(type: str, message: str) -> DecodelabError:
    """The DecodelabError (subclass by name, else the base class) an actor reported."""
    classes, found = [DecodelabError], DecodelabError
    while classes:
        cls = classes.pop()
        if cls.__name__ == type:
            found = cls
            break
        classes += cls.__subclasses__()
    try:
        return found(message)
    except TypeError:
        return DecodelabError(message)
