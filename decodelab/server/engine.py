"""The server's engine: one worker thread runs the model; requests queue and batch.

torch is not re-entrant here, so every model call happens on one thread. Requests become
`Job`s in a bounded queue (full -> `QueueFull`, HTTP 429). The worker takes the oldest job and,
after a short window, every queued job with the same *batch key* (model and every generation
option but the seed), up to `max_batch` rows, and runs them as one left-padded batch through
`compose` — the same path as `dl.generate`, so every registered method works here unchanged. A
constraint (regex / JSON schema / grammar) is compiled on this thread and serves the whole batch;
jobs whose methods keep per-run state (speculative proposers) or give prompts several rows (row
policies: beam search, best-of, SMC) run alone.

Seeds. `dl.generate(lm, prompts, seed=s)` gives row i the generator (s, i). A job with R rows
(prompts x n) run alone therefore draws (seed, 0..R-1). In a shared batch each row keeps the
generator its job would have had alone (`compose(row_seeds=...)`), so batching never changes a
seeded result at float32 weights (with bfloat16 activations — int4/int8/bf16 weights — a row may
round differently beside other rows, which can change a sampled token now and then).

Cancellation and time limits act between steps: a cancelled or late row gets a finish reason,
and the loop drops finished rows from the batch before its next forward pass.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..decoding import GenerationOutput, compose
from ..decoding.generate import choose_methods, encode_prompts
from ..decoding.records import TokenRecord
from ..errors import DecodelabError, InvalidOption, PromptTooLong
from ..models.lm import LM, Prompt


class QueueFull(DecodelabError):
    """The request queue is at its bound; the client should retry later."""

    http_status = 429


class QueueTimeout(DecodelabError):
    """A request waited in the queue past its time limit without starting."""

    http_status = 503


class ServerStopping(DecodelabError):
    """The server shut down while the request was queued or running."""

    http_status = 503


# Messages a job receives (on the event loop of the request that owns it):
#   ("started", [prompt token counts per prompt])
#   ("tokens", row, token_ids, text, records, finish_reason or None)
#   ("done", [GenerationOutput per row])
#   ("error", exception)
Message = tuple


@dataclass
class Job:
    """One request: its prompts (each generated `n` times), options, and where results go.

    `options` are `dl.generate` keywords (sampler, methods and their options); `alone` is set
    from the chosen methods' capabilities when the request is checked."""

    model: str
    prompts: list[Prompt]
    chat: bool | None
    n: int
    seed: int | None
    max_new_tokens: int
    stop: tuple[str, ...]
    top_logprobs: int
    records: bool
    options: dict[str, Any]
    deadline: float
    send: Callable[[Message], None]
    alone: bool = False
    key: str = ""
    id: int = field(default_factory=itertools.count().__next__)
    cancelled: threading.Event = field(default_factory=threading.Event)
    prompt_ids: list[list[int]] = field(default_factory=list)
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.n

    def cancel(self) -> None:
        """Stop generating for this job (client gone); safe from any thread."""
        self.cancelled.set()


def batch_key(job: Job) -> str:
    """Jobs with equal keys can share one batch: same model and the same options but the seed."""
    if job.alone:
        return f"alone/{job.id}"
    return json.dumps([job.model, job.max_new_tokens, list(job.stop), job.top_logprobs, job.records,
                       _canonical(job.options)], sort_keys=True, default=str)


def _canonical(options: dict[str, Any]) -> dict[str, Any]:
    """Options in one spelling: the constraint method made explicit, a JSON schema as a mapping."""
    from ..constrain.api import chosen_method

    out = dict(options)
    if chosen_method(out) is not None:
        out["constraint_method"] = chosen_method(out)
    schema = out.get("json_schema")
    if isinstance(schema, str):
        try:
            out["json_schema"] = json.loads(schema)
        except ValueError:
            pass  # invalid text fails when compiled; as text it batches only with itself
    return out


@dataclass
class EngineStats:
    """Counters for /metrics; updated by the worker under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    batches: int = 0
    batch_rows: int = 0
    max_batch_rows_seen: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    busy_seconds: float = 0.0
    proposed: int = 0
    accepted: int = 0
    cancelled_rows: int = 0
    timed_out_rows: int = 0
    jobs_done: int = 0
    jobs_failed: int = 0
    joined_jobs: int = 0  # jobs that joined a running batch (continuous batching)
    active_rows: int = 0
    recent: deque = field(default_factory=lambda: deque(maxlen=256))  # (end time, tokens, seconds)

    def recent_tokens_per_second(self, window: float = 60.0) -> float:
        """Generated tokens per busy second over batches that ended in the last `window` seconds."""
        now = time.monotonic()
        with self.lock:
            items = [(t, s) for end, t, s in self.recent if now - end <= window]
        seconds = sum(s for _, s in items)
        return sum(t for t, _ in items) / seconds if seconds > 0 else 0.0


class Engine:
    """Runs jobs for a set of loaded models on one worker thread.

    Example:
        >>> import decodelab as dl
        >>> engine = Engine({"tiny-random": dl.load("tiny-random", vocab_size=64)})
        >>> engine.start(); engine.stop()
    """

    def __init__(self, models: dict[str, LM], *, max_batch: int = 16, queue_size: int = 256,
                 batch_wait: float = 0.01, max_rows_per_request: int = 16, continuous: bool = True,
                 measure_costs: bool = True):
        if not models:
            raise InvalidOption("the engine needs at least one model")
        if max_batch < 1 or queue_size < 1:
            raise InvalidOption("max_batch and queue_size must be >= 1")
        self.models = models
        self.max_batch = max_batch
        self.queue_size = queue_size
        self.batch_wait = batch_wait
        self.max_rows_per_request = max_rows_per_request
        self.continuous = continuous
        self.measure_costs = measure_costs
        self.stats = EngineStats()
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._paused = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        """Measure what requests must not measure (each model's verify cost, unless cached), then serve."""
        if self._thread is None:
            if self.measure_costs:
                from ..speculative.cost import cached_cost_curve

                for lm in self.models.values():
                    cached_cost_curve(lm)
            self._thread = threading.Thread(target=self._work, name="decodelab-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            dropped = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for job in dropped:
            job.send(("error", ServerStopping("the server is shutting down")))
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def pause(self) -> None:
        """Hold queued jobs (tests use this to build a queue deterministically)."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def cancel(self, job: Job) -> None:
        """Withdraw a job: out of the queue if waiting, rows finished at the next step if running."""
        job.cancel()
        with self._cond:
            if job in self._pending:
                self._pending.remove(job)

    @property
    def queue_length(self) -> int:
        return len(self._pending)

    def submit(self, job: Job) -> None:
        """Queue a job, or raise QueueFull when the queue holds `queue_size` jobs."""
        with self._cond:
            if self._stopping:
                raise ServerStopping("the server is shutting down")
            if len(self._pending) >= self.queue_size:
                raise QueueFull(f"the request queue is full ({self.queue_size} requests); retry later")
            self._pending.append(job)
            self._cond.notify_all()

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        from ..speculative.cost import no_measurement

        torch.set_grad_enabled(False)  # grad mode is per thread
        with no_measurement():  # a request never takes the machine to measure costs while others wait
            while True:
                jobs = self._next_batch()
                if jobs is None:
                    return
                if jobs:
                    self._run_batch(jobs)

    def _compatible_rows(self, first: Job) -> int:
        return sum(j.rows for j in self._pending if j.key == first.key)

    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            while not self._stopping and (self._paused or not self._pending):
                self._cond.wait()
            if self._stopping:
                return None
            first = self._pending[0]
            # A short window lets requests that arrive together share a batch.
            end = time.monotonic() + self.batch_wait
            while (not self._stopping and not self._paused and self._compatible_rows(first) < self.max_batch
                   and not first.alone):
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._stopping:
                return None
            jobs, rows, keep = [], 0, deque()
            for job in self._pending:
                fits = job.key == first.key and (not jobs or rows + job.rows <= self.max_batch)
                if fits and not first.alone or job is first:
                    jobs.append(job)
                    rows += job.rows
                else:
                    keep.append(job)
            self._pending = keep
        now = time.monotonic()
        ready = []
        for job in jobs:
            if job.cancelled.is_set():
                continue
            if now > job.deadline:
                job.send(("error", QueueTimeout("the request timed out while waiting in the queue")))
                continue
            ready.append(job)
        return ready

    def _encode(self, jobs: list[Job]) -> list[Job]:
        """Tokenise each job's prompts; a job with a bad prompt fails alone."""
        ok = []
        for job in jobs:
            lm = self.models[job.model]
            try:
                job.prompt_ids = encode_prompts(lm, job.prompts, chat=job.chat, batch=len(job.prompts) > 1)
                for i, ids in enumerate(job.prompt_ids):
                    if len(ids) >= lm.context_length:
                        where = f"prompt {i} of the batch" if len(job.prompt_ids) > 1 else "the prompt"
                        raise PromptTooLong(f"{where} has {len(ids)} tokens; the model's context is "
                                            f"{lm.context_length} tokens")
            except Exception as exc:  # noqa: BLE001 - reported to the client, the server goes on
                self._fail(job, exc)
                continue
            ok.append(job)
        return ok

    def _fail(self, job: Job, exc: Exception) -> None:
        with self.stats.lock:
            self.stats.jobs_failed += 1
        job.send(("error", exc))

    def _run_batch(self, jobs: list[Job]) -> None:
        jobs = self._encode(jobs)
        if not jobs:
            return
        first = jobs[0]
        lm = self.models[first.model]
        rows: list[tuple[Job, int]] = [(job, r) for job in jobs for r in range(job.rows)]
        ids = [job.prompt_ids[r // job.n] for job, r in rows]
        started = time.perf_counter()
        try:
            # Compiled here, on the worker thread: llguidance reads the tokenizer the model uses.
            run = compose(lm, ids, models=self.models, row_seeds=[(job.seed, job.rows) for job in jobs],
                          max_new_tokens=first.max_new_tokens, stop=first.stop, top_logprobs=first.top_logprobs,
                          records=first.records, max_rows=max(self.max_batch, self.max_rows_per_request),
                          **_unmodel(first.options))
        except Exception as exc:  # noqa: BLE001 - reported to the client, the server goes on
            for job in jobs:
                self._fail(job, _client_error(exc))
            return
        for job in jobs:
            job.send(("started", [len(p) for p in job.prompt_ids]))
        with self.stats.lock:
            self.stats.active_rows = len(run.state.rows)
        try:
            outputs = self._run(run, rows, jobs)
        except Exception as exc:  # noqa: BLE001
            for job in jobs:
                self._fail(job, _client_error(exc))
            return
        finally:
            with self.stats.lock:
                self.stats.active_rows = 0
        self._count(run, rows, outputs, time.perf_counter() - started)
        offset = 0
        for job in jobs:
            job.send(("done", outputs[offset:offset + job.rows]))
            offset += job.rows

    def _run(self, run: Any, rows: list[tuple[Job, int]], jobs: list[Job]) -> list[GenerationOutput]:
        """The shared loop; each step's tokens go to their jobs as they are accepted, and (continuous
        batching) queued jobs with the same options join the running batch between steps."""
        finished: set[int] = set()
        for events in run.events():
            for event in events:
                job, r = rows[event.row]
                if event.finished:
                    finished.add(event.row)
                out = event.output if event.finished else None
                job.send(("tokens", r, list(event.token_ids), event.text, list(event.records),
                          out.finish_reason if out is not None else None,
                          constraint_fields(out) if out is not None else None))
            self._apply_limits(run, rows, finished)
            if self.continuous and run.joinable:
                self._admit(run, rows, jobs)
        return run.outputs()

    def _admit(self, run: Any, rows: list[tuple[Job, int]], jobs: list[Job]) -> None:
        """Queued jobs with the running batch's key join it (up to `max_batch` active rows): each
        row is prefilled and takes part from the next step on, drawing the random stream it would
        have drawn alone."""
        key = jobs[0].key
        with self._cond:
            room = self.max_batch - len(run.state.active)
            joining = []
            for job in list(self._pending):
                if job.key == key and not job.alone and job.rows <= room:
                    self._pending.remove(job)
                    joining.append(job)
                    room -= job.rows
        if not joining:
            return
        now = time.monotonic()
        admitted = []
        for job in self._encode(joining):
            if job.cancelled.is_set():
                continue
            if now > job.deadline:
                job.send(("error", QueueTimeout("the request timed out while waiting in the queue")))
                continue
            if any(len(job.prompt_ids[r // job.n]) < 2 for r in range(job.rows)):
                with self._cond:  # nothing to prefill before the pending token: the next batch takes it
                    self._pending.appendleft(job)
                continue
            admitted.append(job)
        if not admitted:
            return
        # one prefill for every joining request
        run.join([job.prompt_ids[r // job.n] for job in admitted for r in range(job.rows)],
                 [(job.seed, job.rows) for job in admitted])
        for job in admitted:
            rows.extend((job, r) for r in range(job.rows))
            jobs.append(job)
            job.send(("started", [len(p) for p in job.prompt_ids]))
        with self.stats.lock:
            self.stats.joined_jobs += len(admitted)
            self.stats.active_rows = len(run.state.active)

    def _apply_limits(self, run: Any, rows: list[tuple[Job, int]], finished: set[int]) -> None:
        """Finish outputs whose client left or whose time is up; the loop drops their rows next step."""
        now = time.monotonic()
        for index, (job, r) in enumerate(rows):
            if index in finished:
                continue
            if job.cancelled.is_set() or self._stopping:
                run.finish(index, "cancelled")
                finished.add(index)
                with self.stats.lock:
                    self.stats.cancelled_rows += 1
            elif now > job.deadline:
                # Partial output is more useful than none; finish_reason says it was cut for time.
                run.finish(index, "timeout")
                finished.add(index)
                with self.stats.lock:
                    self.stats.timed_out_rows += 1
                out = run.output(index)
                job.send(("tokens", r, [], run.flush(index), [], out.finish_reason, constraint_fields(out)))

    def _count(self, run: Any, rows: list[tuple[Job, int]], outputs: list[GenerationOutput],
               elapsed: float) -> None:
        generated = sum(len(out.token_ids) for out in outputs)
        with self.stats.lock:
            s = self.stats
            s.batches += 1
            s.batch_rows += len(run.state.rows)
            s.max_batch_rows_seen = max(s.max_batch_rows_seen, len(run.state.rows))
            s.prompt_tokens += sum(len(out.prompt_token_ids) for out in outputs)
            s.generated_tokens += generated
            s.busy_seconds += elapsed
            s.proposed += sum(out.stats.proposed for out in outputs)
            s.accepted += sum(out.stats.accepted for out in outputs)
            s.jobs_done += len({id(job) for job, _ in rows})
            s.recent.append((time.monotonic(), generated, elapsed))


def constraint_fields(out: GenerationOutput) -> dict[str, Any] | None:
    """decodelab's extension fields of a choice: the constraint's fields and the per-method
    `results` (None when there are none).

    JSON has no infinity: a log weight of -inf (a particle or text of weight zero) is sent as null.

    Example:
        >>> from decodelab.decoding.records import GenerationStats
        >>> out = GenerationOutput("a", [5], [], GenerationStats(), "stop", constraint_satisfied=True,
        ...                        log_weight=float("-inf"))
        >>> constraint_fields(out)
        {'constraint_satisfied': True, 'log_weight': None}
    """
    fields: dict[str, Any] = {}
    if out.constraint_satisfied is not None:
        fields["constraint_satisfied"] = out.constraint_satisfied
        for name in ("log_weight", "log_marginal_likelihood"):
            value = getattr(out, name)
            if value is not None:
                fields[name] = _finite(value)
        if out.particles is not None:
            fields["particles"] = [{**p, "log_weight": _finite(p["log_weight"])} for p in out.particles]
    if out.results:
        fields["results"] = json_safe(out.results)
    return fields or None


def json_safe(value: Any) -> Any:
    """A copy with every non-finite float as None (JSON has no infinity)."""
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _unmodel(options: dict[str, Any]) -> dict[str, Any]:
    """A request's options as compose takes them (copies: compose pops what it reads)."""
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in options.items()}


def _client_error(exc: Exception) -> Exception:
    """A grammar llguidance cannot process, or a bad option some library rejects, is the client's
    error (400), whatever was raised."""
    if isinstance(exc, DecodelabError):
        return exc
    if isinstance(exc, (ValueError, TypeError, KeyError, RuntimeError)):
        return InvalidOption(f"invalid request: {exc}")
    return exc


def check_request(lm: LM, options: dict[str, Any], *, rows: int = 1, max_rows: int | None = None) -> bool:
    """Check a request's method options before it queues (a 400 now, not later); True when its
    methods must run alone (not batchable, or several rows per prompt). `rows` (prompts x n) times
    the rows per prompt that row policies ask for must stay within `max_rows`."""
    _, chosen = choose_methods(lm, _unmodel(options))
    for c in chosen:
        if c.method is None or c.method.rows_option is None:
            continue
        total = rows * c.method.rows_per_prompt(c.options)
        if max_rows is not None and total > max_rows:
            raise InvalidOption(f"prompts x n x {c.method.rows_option} is {total} rows; at most {max_rows}",
                                param=c.method.rows_option)
    return any(not c.capabilities.batchable or not c.capabilities.streams for c in chosen)


__all__ = ["Engine", "Job", "QueueFull", "QueueTimeout", "ServerStopping", "TokenRecord", "batch_key", "check_request"]
