"""`decodelab bench --lossy ...`: lossy methods against the exact ones on speed, agreement and quality.

Entries: `plain` (the target alone: the exact reference), any speculative method, lossy or not,
with options (`lossy-route:min_confidence=0.8`, `draft:k=4`); draft-based entries take `--draft`.
The same prompts are generated one at a time in one process with the same sampler and seeds. Per
entry: tokens/s and speedup over `plain`; agreement with `plain` (greedy: the mean fraction of
plain's output reproduced before the first difference, and the share of outputs identical);
the fraction of tokens the method flags as lossy; mean log-probability per token under a scorer
(`--scorer`, default the target: a quality proxy); with `--problems N`, accuracy on the checkable
problems of `problems.py`. Results: lossy.json, lossy.md and lossy.png (speedup against agreement
and against mean log p) in the output folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidOption
from ..models.lm import LM
from .problems import check
from .strategies import bench_inputs, mean_logprob


@dataclass
class LossyRow:
    name: str
    lossless: bool
    prompts: int
    new_tokens: int
    seconds: float
    agreement: float  # mean fraction of the reference's output reproduced before the first difference
    identical: float  # share of outputs identical to the reference's
    lossy_fraction: float | None
    mean_logprob: float
    accuracy: float | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


def entry_keywords(spec: str, draft: LM | None) -> tuple[dict[str, Any], bool]:
    """`dl.generate` keywords of one entry and whether it is lossless.

    Example:
        >>> entry_keywords("plain", None)
        ({}, True)
    """
    from ..decoding.method import get_method
    from .methods import parse_method_options

    base, _, own = spec.strip().partition(":")
    if base == "plain" and not own:
        return {}, True
    method = get_method("speculative", base)
    options = parse_method_options([p for p in own.split(":") if p.strip()])
    if "draft" in method.option_names():
        if draft is None:
            raise InvalidOption(f"--lossy entry '{spec}' needs --draft")
        options["draft"] = draft
    method.check(options)
    return method.keywords(options), method.capabilities.lossless


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def run_lossy_bench(lm: LM, specs: list[str], prompts: list[Any], *, max_new_tokens: int, draft: LM | None = None,
                    scorer: LM | None = None, temperature: float = 0.0, seed: int = 0,
                    checked: list[dict[str, Any]] | None = None, progress: Any = None) -> list[LossyRow]:
    """One row per entry; `plain` runs first (added if missing) as the reference."""
    from ..decoding.generate import generate

    specs = ["plain"] + [s for s in specs if s.strip() != "plain"]
    built = {spec: entry_keywords(spec, draft) for spec in specs}  # every entry checked before any run
    scorer = scorer or lm
    reference: list[list[int]] = []
    rows = []
    for spec, (kw, lossless) in built.items():
        generate(lm, prompts[0], max_new_tokens=4, seed=seed, records=False, temperature=temperature, **kw)  # warm-up
        seconds, tokens, logprob, scored, lossy, outputs = 0.0, 0, 0.0, 0, 0, []
        for i, prompt in enumerate(prompts):
            start = time.perf_counter()
            out = generate(lm, prompt, max_new_tokens=max_new_tokens, seed=seed + i, records=False,
                           temperature=temperature, **kw)
            seconds += time.perf_counter() - start
            tokens += len(out.token_ids)
            lossy += out.stats.lossy_tokens or 0
            outputs.append(out.token_ids)
            total, count = mean_logprob(scorer, prompt, out.text)
            logprob, scored = logprob + total, scored + count
            if progress is not None:
                progress()
        if not reference:
            reference = outputs
        agreement = sum(common_prefix(o, r) / max(1, len(r)) for o, r in zip(outputs, reference)) / len(outputs)
        identical = sum(o == r for o, r in zip(outputs, reference)) / len(outputs)
        accuracy = None
        if checked:
            right = 0
            for j, problem in enumerate(checked):
                out = generate(lm, problem["messages"], max_new_tokens=16, seed=seed + j, records=False,
                               temperature=temperature, **kw)
                right += check(problem, out.text)
                if progress is not None:
                    progress()
            accuracy = right / len(checked)
        is_lossy = not lossless and "speculative" in kw
        rows.append(LossyRow(spec, lossless, len(prompts), tokens, seconds, agreement, identical,
                             lossy / tokens if is_lossy and tokens else None,
                             logprob / scored if scored else float("nan"), accuracy))
    return rows


def to_markdown(rows: list[LossyRow], scorer_name: str) -> str:
    plain = rows[0]
    lines = [f"| method | lossless | tokens/s | vs plain | agreement with plain | identical outputs | lossy tokens "
             f"| mean log p ({scorer_name}) | accuracy |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r.tokens_per_second / plain.tokens_per_second:.2f}x" if plain.tokens_per_second else "–"
        lossy = f"{r.lossy_fraction:.3f}" if r.lossy_fraction is not None else "–"
        acc = f"{r.accuracy:.2f}" if r.accuracy is not None else "–"
        lines.append(f"| {r.name} | {'yes' if r.lossless else 'no'} | {r.tokens_per_second:.2f} | {ratio} | "
                     f"{r.agreement:.3f} | {r.identical:.2f} | {lossy} | {r.mean_logprob:.3f} | {acc} |")
    return "\n".join(lines)


def plot_lossy(rows: list[LossyRow], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plain = rows[0].tokens_per_second or 1.0
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for r in rows:
        speed = r.tokens_per_second / plain
        for ax, y in zip(axes, (r.agreement, r.mean_logprob)):
            ax.scatter(speed, y, marker="o" if r.lossless else "x")
            ax.annotate(r.name, (speed, y), fontsize=6)
    axes[0].set_ylabel("agreement with plain (prefix fraction)")
    axes[1].set_ylabel("mean log p per token under the scorer")
    for ax in axes:
        ax.set_xlabel("speed vs plain (x); o lossless, x lossy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_lossy_command(args: Any, lm: LM) -> int:
    """The `--lossy` branch of `decodelab bench` (after the target is loaded)."""
    from rich.progress import Progress

    from .cli import _load_model

    specs = [s.strip() for s in args.lossy.split(",") if s.strip()]
    if not specs:
        raise InvalidOption("--lossy lists no method")
    draft = _load_model(args.draft, args.threads, args.weights) if args.draft else None
    for spec in specs:
        entry_keywords(spec, draft)
    _, scorer, checked, prompts, max_new, out_dir = bench_inputs(args, "lossy")
    entries = len(specs) + (0 if "plain" in specs else 1)
    with Progress(transient=True, disable=args.no_progress) as bar:
        task = bar.add_task("lossy", total=entries * (len(prompts) + len(checked or [])))
        rows = run_lossy_bench(lm, specs, prompts, max_new_tokens=max_new, draft=draft, scorer=scorer,
                               temperature=args.temperature, seed=args.seed, checked=checked,
                               progress=lambda: bar.advance(task))
    scorer_name = scorer.name if scorer else lm.name
    table = to_markdown(rows, scorer_name)
    plot = plot_lossy(rows, out_dir / "lossy.png")
    (out_dir / "lossy.json").write_text(json.dumps({
        "model": lm.name, "draft": draft.name if draft else None, "scorer": scorer_name, "max_new_tokens": max_new,
        "temperature": args.temperature, "prompts": len(prompts), "problems": len(checked or []),
        "rows": [{**asdict(r), "tokens_per_second": r.tokens_per_second} for r in rows]}, indent=1))
    (out_dir / "lossy.md").write_text(table + "\n")
    print(table)
    print(f"written: {out_dir / 'lossy.json'}, {out_dir / 'lossy.md'}, {plot}")
    return 0
