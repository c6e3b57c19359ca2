"""`decodelab bench --strategies ...`: decoding strategies side by side on quality and speed.

For each entry (greedy, nucleus, typical, or a registered strategy with options, e.g.
`contrastive:penalty_alpha=0.6:top_k=4`) the same prompts are generated one at a time in the
same process, and the table reports rep-2, rep-4 (mean over outputs), distinct-2/3 (over all
outputs), mean log-probability per token under a scorer model (`--scorer`, default the model
itself: a quality proxy), tokens/s, and, with `--problems N`, accuracy on the checkable problem set
of `problems.py`. The self-reinforcement curve of the model (`repetition.self_reinforcement`) is
plotted next to the table.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InvalidOption
from ..models.lm import LM
from .problems import check, problems
from .repetition import distinct_n, plot_self_reinforcement, rep_n, self_reinforcement

BASELINES: dict[str, dict[str, Any]] = {
    "greedy": {"temperature": 0},
    "nucleus": {"temperature": 1.0, "top_p": 0.95},
    "typical": {"temperature": 1.0, "typical_p": 0.95},
}
SAMPLING_FOR_STRATEGIES = {"temperature": 0.7}  # strategies that need sampling (cautious, gumbel-max)


@dataclass
class StrategyRow:
    name: str
    prompts: int
    new_tokens: int
    seconds: float
    rep_2: float
    rep_4: float
    distinct_2: float
    distinct_3: float
    mean_logprob: float
    accuracy: float | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


def keywords(spec: str) -> dict[str, Any]:
    """`dl.generate` keywords of one entry: a baseline, or `strategy[:key=value...]`.

    Example:
        >>> keywords("contrastive:penalty_alpha=0.6")
        {'temperature': 0, 'strategy': 'contrastive', 'strategy_options': {'penalty_alpha': 0.6}}
    """
    from ..decoding.method import get_method
    from .methods import parse_method_options

    base, _, own = spec.strip().partition(":")
    if base in BASELINES and not own:
        return dict(BASELINES[base])
    method = get_method("strategy", base)  # unknown names list the valid ones
    options = parse_method_options([p for p in own.split(":") if p.strip()])
    method.check(options)
    sampler = SAMPLING_FOR_STRATEGIES if method.capabilities.needs_sampling else {"temperature": 0}
    return {**sampler, **method.keywords(options)}


def mean_logprob(scorer: LM, messages: list[dict[str, str]], text: str) -> tuple[float, int]:
    """(sum of log-probabilities, tokens) of `text` after the prompt, under the scorer model."""
    prompt = scorer.encode(messages)
    ids = scorer.tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        return 0.0, 0
    tokens = torch.tensor([(prompt + ids)[: scorer.context_length]], device=scorer.device)
    with torch.inference_mode():
        logp = scorer.model(input_ids=tokens).logits[0, len(prompt) - 1:-1].float().log_softmax(-1)
    picked = logp.gather(-1, tokens[0, len(prompt):, None])
    return float(picked.sum()), int(picked.numel())


def run_strategy_bench(lm: LM, specs: list[str], prompts: list[list[dict[str, str]]], *, max_new_tokens: int,
                       scorer: LM | None = None, seed: int = 0, checked: list[dict[str, Any]] | None = None,
                       progress: Any = None) -> list[StrategyRow]:
    """One row per entry of `specs` (see the module docstring)."""
    from ..decoding.generate import generate

    built = {spec: keywords(spec) for spec in specs}  # every entry checked before any run
    scorer = scorer or lm
    rows = []
    for spec, kw in built.items():
        outputs, seconds, tokens, logprob, scored = [], 0.0, 0, 0.0, 0
        generate(lm, prompts[0], max_new_tokens=4, seed=seed, records=False, **kw)  # warm-up (datastores, caches)
        for i, messages in enumerate(prompts):
            start = time.perf_counter()
            out = generate(lm, messages, max_new_tokens=max_new_tokens, seed=seed + i, records=False, **kw)
            seconds += time.perf_counter() - start
            tokens += len(out.token_ids)
            outputs.append(out.token_ids)
            total, count = mean_logprob(scorer, messages, out.text)
            logprob, scored = logprob + total, scored + count
            if progress is not None:
                progress()
        accuracy = None
        if checked:
            right = 0
            for j, problem in enumerate(checked):
                out = generate(lm, problem["messages"], max_new_tokens=16, seed=seed + j, records=False, **kw)
                right += check(problem, out.text)
                if progress is not None:
                    progress()
            accuracy = right / len(checked)
        rows.append(StrategyRow(spec, len(prompts), tokens, seconds,
                                sum(rep_n(o, 2) for o in outputs) / len(outputs),
                                sum(rep_n(o, 4) for o in outputs) / len(outputs),
                                distinct_n(outputs, 2), distinct_n(outputs, 3),
                                logprob / scored if scored else float("nan"), accuracy))
    return rows


def to_markdown(rows: list[StrategyRow], scorer_name: str) -> str:
    greedy = next((r for r in rows if r.name == "greedy"), None)
    head = ("| strategy | rep-2 | rep-4 | distinct-2 | distinct-3 | mean log p "
            f"({scorer_name}) | tokens/s | vs greedy | accuracy |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        ratio = f"{r.tokens_per_second / greedy.tokens_per_second:.2f}x" if greedy and greedy.new_tokens else "–"
        acc = f"{r.accuracy:.2f}" if r.accuracy is not None else "–"
        lines.append(f"| {r.name} | {r.rep_2:.3f} | {r.rep_4:.3f} | {r.distinct_2:.3f} | {r.distinct_3:.3f} | "
                     f"{r.mean_logprob:.3f} | {r.tokens_per_second:.2f} | {ratio} | {acc} |")
    return "\n".join(lines)


def bench_inputs(args: Any, name: str) -> tuple[Any, LM | None, list[dict[str, Any]] | None, list[Any], int, Path]:
    """What `--strategies` and `--lossy` read from the bench arguments: the suite, the scorer model,
    the checkable problems, the prompts (chat messages), max new tokens and the output folder."""
    from .cli import _load_model
    from .suite import load_suite

    suite = load_suite(args.suite or "specbench_mini", per_category=args.per_category, limit=args.limit)
    scorer = _load_model(args.scorer, args.threads, args.weights) if args.scorer else None
    checked = problems(args.problems) if args.problems else None
    out_dir = Path(args.out or f"bench-out/{name}")
    out_dir.mkdir(parents=True, exist_ok=True)
    return suite, scorer, checked, [p.messages for p in suite.prompts], args.max_new_tokens or 64, out_dir


def run_strategies_command(args: Any, lm: LM) -> int:
    """The `--strategies` branch of `decodelab bench` (after the model is loaded)."""
    from rich.progress import Progress

    specs = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if not specs:
        raise InvalidOption("--strategies lists no strategy")
    for spec in specs:
        keywords(spec)
    suite, scorer, checked, prompts, max_new, out_dir = bench_inputs(args, "strategies")
    total = len(specs) * (len(prompts) + len(checked or []))
    with Progress(transient=True, disable=args.no_progress) as bar:
        task = bar.add_task("strategies", total=total)
        rows = run_strategy_bench(lm, specs, prompts, max_new_tokens=max_new, scorer=scorer, seed=args.seed,
                                  checked=checked, progress=lambda: bar.advance(task))
        sentences = [p.messages[-1]["content"].split(". ")[0].strip() + ". " for p in suite.prompts[:8]]
        curve = self_reinforcement(lm, sentences, repeats=8)
    table = to_markdown(rows, scorer.name if scorer else lm.name)
    plot = plot_self_reinforcement({lm.name: curve}, out_dir / "self_reinforcement.png")
    (out_dir / "strategies.json").write_text(json.dumps({
        "model": lm.name, "scorer": scorer.name if scorer else lm.name, "max_new_tokens": max_new,
        "prompts": len(prompts), "problems": len(checked or []),
        "rows": [{**asdict(r), "tokens_per_second": r.tokens_per_second} for r in rows],
        "self_reinforcement": curve}, indent=1))
    (out_dir / "strategies.md").write_text(table + "\n")
    print(table)
    print("self-reinforcement (mean p of a sentence after k copies, k=0..8): "
          + ", ".join(f"{v:.3f}" for v in curve))
    print(f"written: {out_dir / 'strategies.json'}, {out_dir / 'strategies.md'}, {plot}")
    return 0
