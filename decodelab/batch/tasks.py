"""What a worker does with one row, per task: generate, score, detect, bench.

`JobSpec` says what the job is (picklable, so it travels to worker processes and Ray actors);
`build_task(spec)` loads the model once and returns a `Task`; `Task.record(row)` returns the
row's output record, or an error record when the row fails, so the job goes on. Every record
holds only what is a function of the row and the job (texts, token ids, scores, counters; no
times except in bench rows), so records do not depend on which worker ran the row.

Example:
    >>> from decodelab.batch.rows import parse_rows
    >>> spec = JobSpec("generate", model="tiny-random", options={"max_new_tokens": 3, "temperature": 1.0})
    >>> task = build_task(spec)
    >>> [row] = parse_rows(['{"id": "a", "prompt": "hi"}'])
    >>> record = task.record(row)
    >>> sorted(record), record["stats"]["new_tokens"]
    (['finish_reason', 'id', 'stats', 'text', 'token_ids'], 3)
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import DecodelabError, InvalidOption, InvalidPrompt
from ..models.lm import LM
from .rows import Row, row_seed

TASKS = ("generate", "score", "detect", "bench")
BENCH_WARMUP_TOKENS = 4


@dataclass(frozen=True)
class JobSpec:
    """A batch job: the task, the model (name, weight precision, tiny-random options), the task's
    options (the keywords of `dl.generate`, `watermark.detect`, ...), the job seed and torch threads
    per worker (None: the cores divided among the local workers; one per Ray actor)."""

    task: str
    model: str | None = None
    weights: str = "auto"
    model_options: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    threads: int | None = None

    def describe(self) -> dict[str, Any]:
        """What makes two runs the same job (threads do not change records)."""
        out = asdict(self)
        out.pop("threads")
        return out


class Task:
    """Runs rows of one task with one loaded model."""

    def __init__(self, spec: JobSpec, lm: LM):
        self.spec = spec
        self.lm = lm

    def run(self, row: Row, options: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def record(self, row: Row) -> dict[str, Any]:
        """The row's record: {"id", ...result} or {"id", "error": {"type", "message"}}."""
        try:
            if row.problem is not None:
                raise InvalidPrompt(row.problem)
            own = row.data.get("options", {})
            if not isinstance(own, dict):
                raise InvalidOption("a row's 'options' must be a JSON object")
            options = {**copy.deepcopy(self.spec.options), "seed": row_seed(self.spec.seed, row.id), **own}
            return {"id": row.id, **self.run(row, options)}
        except Exception as exc:  # noqa: BLE001 - a failing row gets an error record and the job goes on
            return {"id": row.id, "error": {"type": type(exc).__name__, "message": str(exc) or repr(exc)}}


def _field(row: Row, *names: str) -> Any:
    for name in names:
        if row.data.get(name) is not None:
            return row.data[name]
    raise InvalidPrompt(f"the row has no {' or '.join(repr(n) for n in names)}")


class GenerateTask(Task):
    """`dl.generate(lm, row["prompt"], **options)`; the row's seed also fixes a watermark's shift."""

    def __init__(self, spec: JobSpec, lm: LM):
        super().__init__(spec, lm)
        from ..decoding.generate import GENERATION_OPTIONS, GenerationOptions, choose_methods
        from ..sampling.options import check_options

        options = dict(spec.options)
        check_options(GenerationOptions, {k: options.pop(k) for k in list(options) if k in GENERATION_OPTIONS},
                      "generate")
        choose_methods(lm, options)  # bad job options fail the job before any row runs

    def run(self, row: Row, options: dict[str, Any]) -> dict[str, Any]:
        from ..decoding.generate import generate

        options.setdefault("records", False)
        out = generate(self.lm, _field(row, "prompt"), **options).as_dict()
        if not out["records"]:
            out.pop("records")
        # counters only: times differ from run to run
        out["stats"] = {k: v for k, v in out["stats"].items() if not k.endswith("time") and k != "tokens_per_second"}
        return out


class ScoreTask(Task):
    """`dl.score` of row["completion"] after row["prompt"] (teacher forcing): one row per completion
    token with the score columns (`scores` option; default all), perplexity and mean entropy, and the
    per-token log-probabilities with their sum and mean."""

    def run(self, row: Row, options: dict[str, Any]) -> dict[str, Any]:
        from ..uncertainty.score import score

        names = options.get("scores")
        if names is not None and "logprob" not in names:
            names = ["logprob", *names]
        result = score(self.lm, _field(row, "prompt"), _field(row, "completion"), scores=names,
                       chat=options.get("chat"))
        out = result.as_dict()
        out["logprobs"] = result.column("logprob")
        out["sum_logprob"] = sum(out["logprobs"])
        out["mean_logprob"] = out["sum_logprob"] / len(out["logprobs"])
        return out


class DetectTask(Task):
    """`watermark.detect` of row["text"] (or row["token_ids"]); the row's seed seeds the resampled keys."""

    def __init__(self, spec: JobSpec, lm: LM):
        super().__init__(spec, lm)
        from ..watermark.keys import check_key

        check_key(spec.options.get("key"))

    def run(self, row: Row, options: dict[str, Any]) -> dict[str, Any]:
        from ..watermark import detect

        [result] = detect(self.lm, [_field(row, "text", "token_ids")], **options)
        return result.as_dict()


class BenchTask(Task):
    """The bench methods (`decodelab bench --methods`) on row["prompt"]: counters and times per
    method, and whether greedy outputs match the first method's. Times vary from run to run."""

    def __init__(self, spec: JobSpec, lm: LM):
        super().__init__(spec, lm)
        from ..bench.methods import RunSettings, make_methods

        o = spec.options
        draft = _load(o["draft"], spec) if o.get("draft") else None
        self.methods = make_methods(list(o.get("methods") or ["plain"]), lm, draft=draft,
                                    method_options=o.get("method_options"))
        for method in self.methods:  # the first run of a method pays one-off costs: not a row's
            method("Hello", RunSettings(BENCH_WARMUP_TOKENS, float(o.get("temperature", 0.0)), 0))

    def run(self, row: Row, options: dict[str, Any]) -> dict[str, Any]:
        from ..bench.methods import RunSettings

        settings = RunSettings(int(options.get("max_new_tokens", 64)), float(options.get("temperature", 0.0)),
                               options["seed"])
        runs = {m.name: m(_field(row, "prompt"), settings) for m in self.methods}
        out: dict[str, Any] = {"methods": {name: {k: v for k, v in run.as_dict().items() if k != "token_ids"}
                                           for name, run in runs.items()}}
        if settings.temperature == 0:
            reference = runs[self.methods[0].name].token_ids
            out["matches_reference"] = {name: run.token_ids == reference for name, run in runs.items()}
        return out


_TASKS: dict[str, type[Task]] = {"generate": GenerateTask, "score": ScoreTask, "detect": DetectTask,
                                 "bench": BenchTask}


def _load(name: str | None, spec: JobSpec) -> LM:
    from ..models import load

    options = spec.model_options if name is not None and name.strip().lower() == "tiny-random" else {}
    return load(name, weights=spec.weights, threads=spec.threads, **options)


def build_task(spec: JobSpec) -> Task:
    """Load the job's model and check the job's options (a DecodelabError fails the whole job)."""
    if spec.task not in _TASKS:
        raise InvalidOption(f"unknown batch task {spec.task!r}; choose one of {', '.join(TASKS)}")
    try:
        return _TASKS[spec.task](spec, _load(spec.model, spec))
    except DecodelabError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidOption(f"batch {spec.task}: {exc}") from None
