"""Batch jobs over JSONL datasets: generate, score, detect, bench, on local workers or a Ray
cluster; each row's output depends only on the row and the job; reruns resume; every id once.

Example:
    >>> from decodelab.batch import JobSpec, run_job
    >>> spec = JobSpec("generate", model="tiny-random", options={"max_new_tokens": 8}, seed=1)
    >>> summary = run_job(spec, "in.jsonl", "out.jsonl", workers=2)   # doctest: +SKIP
"""

from .job import BatchSummary, run_job
from .rows import Row, read_rows, row_seed
from .store import Store
from .tasks import TASKS, JobSpec, build_task

__all__ = ["BatchSummary", "JobSpec", "Row", "Store", "TASKS", "build_task", "read_rows",
           "row_seed", "run_job"]
