"""`run_bench`: run methods side by side on a prompt suite in one process, and aggregate.

Order is prompt-major: for each prompt every method runs once before the next prompt, and the
method order rotates from prompt to prompt, so slow drift of the machine (other processes,
thermal state, allocator growth) lands on all methods alike instead of on whichever ran last.

Speedups are ratios of end-to-end tokens per second (total new tokens / total wall time,
prompt encoding and prefill included). Decode-only figures (wall time minus the time to the
end of the first target forward, and minus a draft model's own prefill where it runs after
that, as decodelab's draft methods do) are reported beside them. For HF's speculative methods that
first forward already verifies the first drafts (and follows the first drafting), so their
"prefill" is a little longer and their decode time a little shorter than for the others.

Peak memory is the process's peak resident set size (`getrusage`), read after each method's
first run. It is a per-process high-water mark: it only ever grows, so a method's figure is the
peak of everything that ran before it too. Read it as "did this method raise the peak".
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..errors import InvalidOption
from ..models.lm import LM
from .methods import BenchMethod, MethodRun, RunSettings, make_methods
from .suite import BenchPrompt, Suite, load_suite

WARMUP_TOKENS = 8


@dataclass
class PromptResult:
    """One method on one prompt."""

    prompt_id: str
    category: str
    method: str
    run: MethodRun
    matches_reference: bool | None = None  # greedy runs only
    first_mismatch: int | None = None  # index of the first differing token

    def as_dict(self) -> dict[str, Any]:
        out = {"prompt_id": self.prompt_id, "category": self.category, "method": self.method}
        out.update(self.run.as_dict())
        out.update(matches_reference=self.matches_reference, first_mismatch=self.first_mismatch)
        return out


@dataclass
class Summary:
    """Totals and ratios of one method over a set of prompts."""

    method: str
    prompts: int
    new_tokens: int
    wall_time: float
    decode_time: float | None
    draft_prefill_time: float | None  # a draft model's own prefill, left out of decode_time
    target_forwards: int
    draft_forwards: int | None
    verify_steps: int
    proposed: int | None
    accepted: int | None
    acceptance_by_position: list[float]  # accepted / proposed at each draft position
    proposed_by_position: list[int]
    mismatches: int | None
    speedup_vs_plain: float | None = None
    speedup_vs_hf: float | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.wall_time if self.wall_time > 0 else 0.0

    @property
    def ms_per_token(self) -> float:
        return 1000 * self.wall_time / self.new_tokens if self.new_tokens else float("nan")

    @property
    def decode_tokens_per_second(self) -> float | None:
        if self.decode_time is None or self.decode_time <= 0:
            return None
        return self.new_tokens / self.decode_time

    @property
    def decode_ms_per_token(self) -> float | None:
        if self.decode_time is None or not self.new_tokens:
            return None
        return 1000 * self.decode_time / self.new_tokens

    @property
    def forwards_per_token(self) -> float:
        return self.target_forwards / self.new_tokens if self.new_tokens else float("nan")

    @property
    def mean_accepted_length(self) -> float:
        """New tokens per verify step (per target forward for HF), bonus token included."""
        return self.new_tokens / self.verify_steps if self.verify_steps else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(tokens_per_second=self.tokens_per_second, ms_per_token=self.ms_per_token,
                   decode_tokens_per_second=self.decode_tokens_per_second,
                   decode_ms_per_token=self.decode_ms_per_token, forwards_per_token=self.forwards_per_token,
                   mean_accepted_length=self.mean_accepted_length)
        return out


@dataclass
class BenchResult:
    """Everything one bench run measured: raw per-prompt runs, summaries, memory, machine."""

    model: str
    draft: str | None
    suite: str
    methods: list[str]
    settings: dict[str, Any]
    runs: list[PromptResult]
    summary: dict[str, Summary]
    by_category: dict[str, dict[str, Summary]]
    memory: dict[str, dict[str, float]]
    machine: dict[str, Any]
    reference: str | None  # the method greedy outputs are compared with
    skipped: list[dict[str, Any]] = field(default_factory=list)  # prompts that did not fit the context
    method_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    bench_time: float = 0.0

    @property
    def categories(self) -> list[str]:
        return list(self.by_category)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "draft": self.draft,
            "suite": self.suite,
            "methods": self.methods,
            "method_info": self.method_info,
            "settings": self.settings,
            "reference": self.reference,
            "skipped": self.skipped,
            "summary": {m: s.as_dict() for m, s in self.summary.items()},
            "by_category": {c: {m: s.as_dict() for m, s in per.items()} for c, per in self.by_category.items()},
            "memory": self.memory,
            "machine": self.machine,
            "bench_time": self.bench_time,
            "runs": [r.as_dict() for r in self.runs],
        }


def run_bench(lm: LM, methods: Sequence[str | BenchMethod], suite: Suite | str, *, max_new_tokens: int = 64,
              temperature: float = 0.0, seed: int | None = 0, draft: LM | None = None,
              method_options: dict[str, Any] | None = None, warmup: bool | str = True,
              threads: int | None = None, progress: bool = True, command: str | None = None) -> BenchResult:
    """Run every method on every prompt of a suite, prompt-major, and aggregate.

    `methods` are names (see `decodelab.bench.methods`) or `BenchMethod` objects.
    `warmup`: True or "all" runs each method once on the first prompt with a few tokens before
    timing; "once" runs only the first method once; False runs none. Prompt i is generated with
    seed `seed + i` by every method.

    Example:
        >>> import decodelab as dl
        >>> from decodelab.bench import run_bench, load_suite
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> result = run_bench(lm, ["plain", "hf"], load_suite("quick", limit=1), max_new_tokens=4,
        ...                    progress=False)
        >>> result.summary["hf"].mismatches
        0
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InvalidOption(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
        raise InvalidOption(f"temperature must be a number >= 0, got {temperature!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidOption(f"seed must be an integer, got {seed!r}")
    if warmup not in (True, False, "all", "once"):
        raise InvalidOption(f"warmup must be True, False, 'all' or 'once', got {warmup!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InvalidOption(f"threads must be an integer >= 1, got {threads!r}")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(lm, methods, suite, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                    draft=draft, method_options=method_options, warmup=warmup, progress=progress, command=command)
    finally:
        # The thread count is process-wide: give the caller back the setting it had.
        torch.set_num_threads(previous_threads)


def _run(lm: LM, methods: Sequence[str | BenchMethod], suite: Suite | str, *, max_new_tokens: int,
         temperature: float, seed: int | None, draft: LM | None, method_options: dict[str, Any] | None,
         warmup: bool | str, progress: bool, command: str | None) -> BenchResult:
    if isinstance(suite, str):
        suite = load_suite(suite)
    names = [m for m in methods if isinstance(m, str)]
    built = iter(make_methods(names, lm, draft=draft, method_options=method_options)) if names else iter(())
    bench_methods = [next(built) if isinstance(m, str) else m for m in methods]
    if not bench_methods:
        raise InvalidOption("at least one bench method is required")
    order = [m.name for m in bench_methods]
    if len(set(order)) != len(order):
        raise InvalidOption(f"bench method names must be unique, got {order}")
    greedy = float(temperature) == 0.0
    reference = next((r for r in ("plain", "hf") if r in order), None) if greedy else None

    prompts, skipped = _fitting_prompts(suite, [lm] + ([draft] if draft is not None else []), max_new_tokens)
    if not prompts:
        raise InvalidOption(f"no prompt of suite '{suite.name}' fits the model's context with "
                            f"{max_new_tokens} new tokens")

    load_before = _load_average()
    started = time.perf_counter()
    if warmup:
        warm = bench_methods if warmup in (True, "all") else bench_methods[:1]
        settings = RunSettings(min(WARMUP_TOKENS, max_new_tokens), float(temperature), seed)
        for method in warm:
            method(prompts[0].messages, settings)

    memory: dict[str, dict[str, float]] = {}
    runs: list[PromptResult] = []
    pairs = list(enumerate(prompts))
    with _progress(progress, len(pairs) * len(bench_methods)) as advance:
        for index, prompt in pairs:
            settings = RunSettings(max_new_tokens, float(temperature), None if seed is None else seed + index)
            shift = index % len(bench_methods)
            per_prompt: dict[str, PromptResult] = {}
            for method in bench_methods[shift:] + bench_methods[:shift]:
                advance(f"{prompt.id} · {method.name}")
                run = method(prompt.messages, settings)
                per_prompt[method.name] = PromptResult(prompt.id, prompt.category, method.name, run)
                if method.name not in memory:
                    memory[method.name] = _memory_now()
            if reference is not None:
                expected = per_prompt[reference].run.token_ids
                for result in per_prompt.values():
                    result.first_mismatch = _first_mismatch(expected, result.run.token_ids)
                    result.matches_reference = result.first_mismatch is None
            runs.extend(per_prompt[name] for name in order)

    machine = machine_info(command)
    # Other processes on the machine distort every timing; keep the evidence beside the numbers.
    machine["load_average"] = {"start": load_before, "end": _load_average()}
    summary = _summarise(runs, order, greedy)
    categories = list(dict.fromkeys(p.category for p in prompts))
    by_category = {c: _summarise([r for r in runs if r.category == c], order, greedy) for c in categories}
    return BenchResult(
        model=lm.name,
        draft=draft.name if draft is not None else None,
        suite=suite.name,
        methods=order,
        settings={"max_new_tokens": max_new_tokens, "temperature": float(temperature), "seed": seed,
                  "warmup": warmup, "prompts": len(prompts), "per_category": suite.per_category,
                  "method_options": dict(method_options or {}), "order": "prompt-major, rotating method order"},
        runs=runs,
        summary=summary,
        by_category=by_category,
        memory=memory,
        machine=machine,
        reference=reference,
        skipped=skipped,
        method_info={m.name: {"kind": m.kind, "lossless": m.lossless, "description": m.description}
                     for m in bench_methods},
        bench_time=time.perf_counter() - started,
    )


def _fitting_prompts(suite: Suite, models: list[LM], max_new_tokens: int,
                     ) -> tuple[list[BenchPrompt], list[dict[str, Any]]]:
    """Prompts whose encoding plus max_new_tokens fits every model's context; the rest are
    skipped (and listed in the result) rather than failing the whole run half way."""
    kept, skipped = [], []
    for prompt in suite.prompts:
        for model in models:
            length = len(model.encode(prompt.messages))
            if length + max_new_tokens > model.context_length:
                skipped.append({"prompt_id": prompt.id, "category": prompt.category, "model": model.name,
                                "prompt_tokens": length, "context_length": model.context_length})
                break
        else:
            kept.append(prompt)
    return kept, skipped


def _first_mismatch(expected: list[int], got: list[int]) -> int | None:
    for i, (a, b) in enumerate(zip(expected, got)):
        if a != b:
            return i
    return None if len(expected) == len(got) else min(len(expected), len(got))


def _summarise(runs: list[PromptResult], order: list[str], greedy: bool) -> dict[str, Summary]:
    out: dict[str, Summary] = {}
    for name in order:
        mine = [r for r in runs if r.method == name]
        if not mine:
            continue
        rs = [r.run for r in mine]
        decode = [r.decode_time for r in rs]
        width = max((len(r.proposed_by_position) for r in rs), default=0)
        proposed_pos = [sum(r.proposed_by_position[j] for r in rs if j < len(r.proposed_by_position))
                        for j in range(width)]
        accepted_pos = [sum(r.acceptance_by_position[j] for r in rs if j < len(r.acceptance_by_position))
                        for j in range(width)]
        out[name] = Summary(
            method=name,
            prompts=len(rs),
            new_tokens=sum(r.new_tokens for r in rs),
            wall_time=sum(r.wall_time for r in rs),
            decode_time=None if any(d is None for d in decode) else sum(decode),
            draft_prefill_time=_sum_or_none(r.draft_prefill_time for r in rs),
            target_forwards=sum(r.target_forwards for r in rs),
            draft_forwards=_sum_or_none(r.draft_forwards for r in rs),
            verify_steps=sum(r.verify_steps if r.verify_steps is not None else r.target_forwards for r in rs),
            proposed=_sum_or_none(r.proposed for r in rs),
            accepted=_sum_or_none(r.accepted for r in rs),
            acceptance_by_position=[a / p if p else 0.0 for a, p in zip(accepted_pos, proposed_pos)],
            proposed_by_position=proposed_pos,
            mismatches=sum(1 for r in mine if r.matches_reference is False) if greedy and
            any(r.matches_reference is not None for r in mine) else None,
        )
    for baseline, attr in (("plain", "speedup_vs_plain"), ("hf", "speedup_vs_hf")):
        base = out.get(baseline)
        if base is None or base.tokens_per_second <= 0:
            continue
        for summary in out.values():
            setattr(summary, attr, summary.tokens_per_second / base.tokens_per_second)
    return out


def _sum_or_none(values) -> int | float | None:
    values = list(values)
    return None if any(v is None for v in values) else sum(values)


def _memory_now() -> dict[str, float]:
    """Peak and current RSS of this process in MB."""
    out: dict[str, float] = {}
    try:
        import resource

        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Linux reports kilobytes, macOS bytes.
        out["peak_rss_mb"] = peak_kb / 1024 / (1024 if sys.platform == "darwin" else 1)
    except (ImportError, OSError):
        pass
    try:
        import psutil

        out["rss_mb"] = psutil.Process().memory_info().rss / 2**20
    except (ImportError, OSError):
        pass
    return out


def _load_average() -> float | None:
    """One-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(command: str | None = None) -> dict[str, Any]:
    """Versions, threads, CPU, date and command line, for the results file."""
    import transformers

    from .. import __version__

    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else " ".join(sys.argv),
        "decodelab": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


class _progress:
    """A rich progress bar over (prompt, method) pairs, or nothing."""

    def __init__(self, enabled: bool, total: int):
        self.enabled = enabled
        self.total = total
        self._bar = None
        self._task = None
        self._started = False

    def __enter__(self):
        if not self.enabled:
            return lambda label: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                             TextColumn("{task.description}"), transient=False)
        self._bar.__enter__()
        self._task = self._bar.add_task("", total=self.total)

        def advance(label: str) -> None:
            # Called before each run: the previous pair is done, the label names the next one.
            if self._started:
                self._bar.advance(self._task)
            self._started = True
            self._bar.update(self._task, description=label)

        return advance

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            if exc[0] is None and self._started:
                self._bar.advance(self._task)
                self._bar.update(self._task, description="done")
            self._bar.__exit__(*exc)
