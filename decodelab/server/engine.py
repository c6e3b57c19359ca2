"""The server's engine: one worker thread runs the model; requests queue and batch.

torch is not re-entrant here, so every model call happens on one thread. Requests become
`Job`s in a bounded queue (full -> `QueueFull`, HTTP 429). The worker takes the oldest job and,
after a short window, every queued job with the same *batch key* (model, processed sampler
settings, max tokens, stop strings, record settings), up to `max_batch` rows, and runs them as
one left-padded batch through `prepare` + `run_loop` — the same code path as `dl.generate`.

Seeds. `dl.generate(lm, prompts, seed=s)` gives row i the generator (s, i). A job with R rows
(prompts x n) run alone therefore draws (seed, 0..R-1). In a shared batch each row keeps the
generator its job would have had alone: we build the batch's `DecodeState` and replace its
`generators` by the per-job ones, so batching never changes a seeded result.

Cancellation and time limits act between steps: a cancelled or late row gets a finish reason,
and the loop drops finished rows from the batch before its next forward pass.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..decoding import GenerationOutput, prepare, run_loop
from ..decoding.records import TokenRecord
from ..errors import DecodelabError, InvalidOption, PromptTooLong
from ..models.lm import LM, Prompt
from ..sampling.config import SamplingConfig
from ..sampling.keyed import row_generators


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
    """One request: its prompts (each generated `n` times), options, and where results go."""

    model: str
    prompts: list[Prompt]
    chat: bool | None
    n: int
    seed: int | None
    max_new_tokens: int
    stop: tuple[str, ...]
    top_logprobs: int
    records: bool
    sampler: dict[str, Any]
    speculative: tuple[str, dict[str, Any]] | None
    deadline: float
    send: Callable[[Message], None]
    key: str = ""
    watermark: dict[str, Any] | None = None
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


def batch_key(job: Job, config: SamplingConfig) -> str:
    """Jobs with equal keys can share one batch: same model and same per-step work."""
    if job.speculative is not None:
        return f"speculative/{job.id}"  # a proposer holds per-run state: never shared
    return json.dumps([job.model, config.as_dict(), job.max_new_tokens, list(job.stop), job.top_logprobs,
                       job.records, job.watermark], sort_keys=True, default=str)


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
                 batch_wait: float = 0.01):
        if not models:
            raise InvalidOption("the engine needs at least one model")
        if max_batch < 1 or queue_size < 1:
            raise InvalidOption("max_batch and queue_size must be >= 1")
        self.models = models
        self.max_batch = max_batch
        self.queue_size = queue_size
        self.batch_wait = batch_wait
        self.stats = EngineStats()
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._paused = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        if self._thread is None:
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
        torch.set_grad_enabled(False)  # grad mode is per thread
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
                   and first.speculative is None):
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._stopping:
                return None
            jobs, rows, keep = [], 0, deque()
            for job in self._pending:
                fits = job.key == first.key and (not jobs or rows + job.rows <= self.max_batch)
                if fits and first.speculative is None or job is first:
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
                job.prompt_ids = [lm.encode(p, chat=job.chat) for p in job.prompts]
                for ids in job.prompt_ids:
                    if len(ids) >= lm.context_length:
                        raise PromptTooLong(f"the prompt has {len(ids)} tokens; the model's context is "
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
            state, _ = prepare(lm, ids, max_new_tokens=first.max_new_tokens, stop=first.stop,
                               top_logprobs=first.top_logprobs, records=first.records, seed=None, **first.sampler)
            # Each row draws from the generator it would have had with its job run alone.
            state.generators = [g for job in jobs for g in row_generators(job.seed, job.rows)]
            if first.watermark is not None:
                from ..watermark.schemes import verifier_for

                proposer, verifier = None, verifier_for(first.watermark, state)
            else:
                proposer, verifier = _speculative(first, lm, self.models, state.config)
        except Exception as exc:  # noqa: BLE001
            for job in jobs:
                self._fail(job, exc)
            return
        for job in jobs:
            job.send(("started", [len(p) for p in job.prompt_ids]))
        with self.stats.lock:
            self.stats.active_rows = len(rows)
        try:
            for events in run_loop(state, proposer, verifier):
                for event in events:
                    job, r = rows[event.row]
                    row = state.rows[event.row]
                    count = len(event.token_ids)
                    records = row.records[-count:] if (count and state.keep_records) else []
                    job.send(("tokens", r, list(event.token_ids), event.text, records,
                              row.finish_reason if event.finished else None))
                self._apply_limits(state, rows)
        except Exception as exc:  # noqa: BLE001
            for job in jobs:
                self._fail(job, exc)
            return
        finally:
            with self.stats.lock:
                self.stats.active_rows = 0
        elapsed = time.perf_counter() - started
        self._count(state, rows, elapsed)
        for i, job in enumerate(jobs):
            offset = sum(j.rows for j in jobs[:i])
            outputs = [_output(state.rows[offset + r]) for r in range(job.rows)]
            job.send(("done", outputs))

    def _apply_limits(self, state: Any, rows: list[tuple[Job, int]]) -> None:
        """Finish rows whose client left or whose time is up; the loop drops them next step."""
        now = time.monotonic()
        for i in state.active:
            job, r = rows[i]
            row = state.rows[i]
            if row.finish_reason is not None:
                continue
            if job.cancelled.is_set() or self._stopping:
                row.finish_reason = "cancelled"
                with self.stats.lock:
                    self.stats.cancelled_rows += 1
            elif now > job.deadline:
                # Partial output is more useful than none; it ends as if the budget ran out.
                row.finish_reason = "length"
                with self.stats.lock:
                    self.stats.timed_out_rows += 1
                job.send(("tokens", r, [], row.text.flush(), [], "length"))

    def _count(self, state: Any, rows: list[tuple[Job, int]], elapsed: float) -> None:
        generated = sum(len(row.output_ids) for row in state.rows)
        with self.stats.lock:
            s = self.stats
            s.batches += 1
            s.batch_rows += len(rows)
            s.max_batch_rows_seen = max(s.max_batch_rows_seen, len(rows))
            s.prompt_tokens += sum(len(row.prompt_ids) for row in state.rows)
            s.generated_tokens += generated
            s.busy_seconds += elapsed
            s.proposed += sum(row.stats.proposed for row in state.rows)
            s.accepted += sum(row.stats.accepted for row in state.rows)
            s.jobs_done += len({id(job) for job, _ in rows})
            s.recent.append((time.monotonic(), generated, elapsed))


def _output(row: Any) -> GenerationOutput:
    return GenerationOutput(text=row.text.text, token_ids=list(row.output_ids), records=list(row.records),
                            stats=row.stats, finish_reason=row.finish_reason or "length",
                            prompt_token_ids=list(row.prompt_ids))


def _speculative(job: Job, lm: LM, models: dict[str, LM], config: SamplingConfig):
    """(proposer, verifier) for a job's speculative method, or (None, None) for plain decoding.

    `decodelab.speculative` is imported lazily: the server works without it, and an unknown or
    unavailable method is the client's error (400), never a crash.
    """
    if job.speculative is None:
        return None, None
    name, options = job.speculative
    options = dict(options)
    for key, value in list(options.items()):
        # Model-valued options name a served model; a request never loads a model or a path.
        if key in ("draft", "draft_model", "model"):
            if not isinstance(value, str) or value not in models:
                raise InvalidOption(f"speculative option {key}={value!r} must name a served model "
                                    f"({', '.join(models)})")
            options["draft" if key == "draft_model" else key] = models[value]
    try:
        from ..speculative import make
        from ..speculative.resolve import resolve_speculative
    except ImportError as exc:
        raise InvalidOption(f"speculative decoding is not available in this installation ({exc})") from None
    try:
        method = make(name, target=lm, **options)
        return resolve_speculative(method, lm)
    except DecodelabError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidOption(f"speculative method {name!r}: {exc}") from None


__all__ = ["Engine", "Job", "QueueFull", "QueueTimeout", "ServerStopping", "TokenRecord", "batch_key"]
