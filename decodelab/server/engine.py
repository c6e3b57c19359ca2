"""The server's engine: one worker thread runs the model; requests queue and batch.

torch is not re-entrant here, so every model call happens on one thread. Requests become
`Job`s in a bounded queue (full -> `QueueFull`, HTTP 429). The worker takes the oldest job and,
after a short window, every queued job with the same *batch key* (model, processed sampler
settings, max tokens, stop strings, record settings, constraint), up to `max_batch` rows, and runs
them as one left-padded batch through `prepare` + `run_loop` — the same code path as `dl.generate`.
A constraint (regex / JSON schema / grammar) is compiled on this thread and serves the whole
batch; speculative and SMC jobs run alone.

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
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..decoding import GenerationOutput, prepare, run_loop
from ..decoding.generate import row_output
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
    constraint: dict[str, Any] | None = None  # regex/json_schema/grammar + method options, as in dl.generate
    id: int = field(default_factory=itertools.count().__next__)
    cancelled: threading.Event = field(default_factory=threading.Event)
    prompt_ids: list[list[int]] = field(default_factory=list)
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.n

    @property
    def alone(self) -> bool:
        """Runs in a batch of its own: a proposer holds per-run state, and SMC runs its particles
        as a batch of their own."""
        return self.speculative is not None or _method(self.constraint) == "smc"

    def cancel(self) -> None:
        """Stop generating for this job (client gone); safe from any thread."""
        self.cancelled.set()


def batch_key(job: Job, config: SamplingConfig) -> str:
    """Jobs with equal keys can share one batch: same model and same per-step work."""
    if job.alone:
        return f"alone/{job.id}"
    # Constrained rows share a batch only with rows of the same grammar and method: one
    # GrammarConstraint (and one AWRS verifier) serves the whole batch.
    return json.dumps([job.model, config.as_dict(), job.max_new_tokens, list(job.stop), job.top_logprobs,
                       job.records, job.watermark, _canonical_constraint(job.constraint)], sort_keys=True,
                      default=str)


def _method(constraint: dict[str, Any] | None) -> str | None:
    """The constraint method a job's options select (as `constraint_request` decides it)."""
    if constraint is None:
        return None
    return constraint.get("constraint_method") or ("smc" if constraint.get("particles") is not None else "mask")


def _canonical_constraint(constraint: dict[str, Any] | None) -> Any:
    """Constraint options with a JSON schema in one spelling (dict or text, any key order)."""
    if constraint is None:
        return None
    out = dict(constraint, constraint_method=_method(constraint))
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
            # Compiled here, on the worker thread: llguidance reads the tokenizer the model uses.
            request = _constraint_request(lm, first.constraint)
            state, _ = prepare(lm, ids, max_new_tokens=first.max_new_tokens, stop=first.stop,
                               top_logprobs=first.top_logprobs, records=first.records, seed=None,
                               prompt_hook=request.heal if request is not None else None, **first.sampler)
            # Each row draws from the generator it would have had with its job run alone.
            state.generators = [g for job in jobs for g in row_generators(job.seed, job.rows)]
            smc = request is not None and request.method == "smc"
            proposer, verifier = (None, None) if smc else _method_for(first, lm, self.models, state, request)
        except Exception as exc:  # noqa: BLE001
            for job in jobs:
                self._fail(job, exc)
            return
        for job in jobs:
            job.send(("started", [len(p) for p in job.prompt_ids]))
        with self.stats.lock:
            self.stats.active_rows = len(rows)
        try:
            if smc:
                outputs = self._run_smc(state, request, rows)
            else:
                outputs = self._run_loop(state, proposer, verifier, request, rows)
        except Exception as exc:  # noqa: BLE001
            for job in jobs:
                self._fail(job, exc)
            return
        finally:
            with self.stats.lock:
                self.stats.active_rows = 0
        elapsed = time.perf_counter() - started
        self._count(state, rows, outputs, elapsed)
        offset = 0
        for job in jobs:
            job.send(("done", outputs[offset:offset + job.rows]))
            offset += job.rows

    def _run_loop(self, state: Any, proposer: Any, verifier: Any, request: Any,
                  rows: list[tuple[Job, int]]) -> list[GenerationOutput]:
        """The shared loop; each step's tokens go to their jobs as they are accepted."""
        lm = state.lm
        # token healing: the backed-up prompt text is generated again first; do not send it twice
        healed = list(request.prefixes) if request is not None else [""] * len(rows)
        for events in run_loop(state, proposer, verifier):
            for event in events:
                job, r = rows[event.row]
                row = state.rows[event.row]
                count = len(event.token_ids)
                records = row.records[-count:] if (count and state.keep_records) else []
                finish, fields = None, None
                if event.finished:
                    out = row_output(lm, row, request, event.row)
                    finish, fields = out.finish_reason, constraint_fields(out)
                    # AWRS's placeholder EOS after a dead end is not part of the output
                    records = records[:max(0, len(records) - (len(row.output_ids) - len(out.token_ids)))]
                job.send(("tokens", r, list(event.token_ids), _unheal(healed, event.row, event.text), records,
                          finish, fields))
            self._apply_limits(state, rows, request, healed)
        return [row_output(lm, row, request, i) for i, row in enumerate(state.rows)]

    def _run_smc(self, state: Any, request: Any, rows: list[tuple[Job, int]]) -> list[GenerationOutput]:
        """SMC over AWRS, row by row (its particles are the batch); each row's text goes out whole
        when it is done, as `dl.stream` does. Time limits and cancellation act between rows."""
        from ..constrain.smc import run_smc, smc_output

        lm = state.lm
        outputs = []
        for i, (row, grammar) in enumerate(zip(state.rows, request.grammars())):
            job, r = rows[i]
            if job.cancelled.is_set() or self._stopping or time.monotonic() > job.deadline:
                row.finish_reason = "cancelled" if job.cancelled.is_set() or self._stopping else "length"
                out = row_output(lm, row)
                out.constraint_satisfied = False
            else:
                result = run_smc(lm, row.prompt_ids, grammar, particles=request.particles,
                                 max_new_tokens=state.max_new_tokens, config=state.config,
                                 generator=state.generators[i], ess_threshold=request.ess_threshold,
                                 records=state.keep_records)
                out = smc_output(lm, row.prompt_ids, result, state.generators[i])
                prefix = request.prefixes[i]
                if prefix and out.text.startswith(prefix):
                    out.text = out.text[len(prefix):]
            outputs.append(out)
            if out.finish_reason != "cancelled":
                job.send(("tokens", r, list(out.token_ids), out.text, list(out.records), out.finish_reason,
                          constraint_fields(out)))
        return outputs

    def _apply_limits(self, state: Any, rows: list[tuple[Job, int]], request: Any = None,
                      healed: list[str] | None = None) -> None:
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
                text = row.text.flush()
                if healed is not None:
                    text = _unheal(healed, i, text)
                out = row_output(state.lm, row, request, i)
                job.send(("tokens", r, [], text, [], out.finish_reason, constraint_fields(out)))

    def _count(self, state: Any, rows: list[tuple[Job, int]], outputs: list[GenerationOutput],
               elapsed: float) -> None:
        generated = sum(len(out.token_ids) for out in outputs)
        with self.stats.lock:
            s = self.stats
            s.batches += 1
            s.batch_rows += len(rows)
            s.max_batch_rows_seen = max(s.max_batch_rows_seen, len(rows))
            s.prompt_tokens += sum(len(row.prompt_ids) for row in state.rows)
            s.generated_tokens += generated
            s.busy_seconds += elapsed
            s.proposed += sum(out.stats.proposed for out in outputs)
            s.accepted += sum(out.stats.accepted for out in outputs)
            s.jobs_done += len({id(job) for job, _ in rows})
            s.recent.append((time.monotonic(), generated, elapsed))


def constraint_fields(out: GenerationOutput) -> dict[str, Any] | None:
    """decodelab's extension fields of a constrained choice (None when unconstrained).

    JSON has no infinity: a log weight of -inf (a particle or text of weight zero) is sent as null.

    Example:
        >>> from decodelab.decoding.records import GenerationStats
        >>> out = GenerationOutput("a", [5], [], GenerationStats(), "stop", constraint_satisfied=True,
        ...                        log_weight=float("-inf"))
        >>> constraint_fields(out)
        {'constraint_satisfied': True, 'log_weight': None}
    """
    if out.constraint_satisfied is None:
        return None
    fields: dict[str, Any] = {"constraint_satisfied": out.constraint_satisfied}
    for name in ("log_weight", "log_marginal_likelihood"):
        value = getattr(out, name)
        if value is not None:
            fields[name] = _finite(value)
    if out.particles is not None:
        fields["particles"] = [{**p, "log_weight": _finite(p["log_weight"])} for p in out.particles]
    return fields


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _unheal(healed: list[str], i: int, text: str) -> str:
    """Drop the part of row i's healed prefix that `text` repeats (the prefix may span pieces)."""
    prefix = healed[i]
    if not prefix or not text:
        return text
    cut = 0
    while cut < min(len(prefix), len(text)) and prefix[cut] == text[cut]:
        cut += 1
    healed[i] = prefix[cut:] if cut else ""  # a constrained row always repeats it; if not, stop looking
    return text[cut:]


def _constraint_request(lm: LM, options: dict[str, Any] | None) -> Any:
    """The parsed and compiled constraint of a job (None when unconstrained).

    A grammar llguidance cannot process is the client's error (400), whatever llguidance raises.
    """
    if options is None:
        return None
    from ..constrain.api import constraint_request
    from ..constrain.grammar import InvalidConstraint

    try:
        return constraint_request(lm, dict(options))
    except DecodelabError:
        raise
    except (ValueError, TypeError, RuntimeError, KeyError) as exc:
        raise InvalidConstraint(f"invalid constraint: {exc}") from None


def _method_for(job: Job, lm: LM, models: dict[str, LM], state: Any, request: Any) -> tuple[Any, Any]:
    """(proposer, verifier) for a batch: a constraint is attached to the state; AWRS replaces the
    verifier; otherwise a watermark, a speculative method or plain decoding."""
    if request is not None:
        constraint = request.make_constraint()
        state.constraint = constraint
        if request.method == "awrs":
            from ..constrain.awrs import AWRSVerifier

            return None, AWRSVerifier(constraint)
    if job.watermark is not None:
        from ..watermark.schemes import verifier_for

        return None, verifier_for(job.watermark, state)
    return _speculative(job, lm, models, state.config)


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
