"""The `decodelab bench` subcommand: `add_bench_parser(subparsers)` and `run_bench_command(args)`.

Example:
    decodelab bench --quick
    decodelab bench --methods plain,hf,hf-prompt-lookup --per-category 2 --max-new-tokens 64
    decodelab bench --model qwen2.5-coder-1.5b --draft qwen2.5-coder-0.5b --per-category 1
"""

from __future__ import annotations

import argparse
import datetime as _dt
import shlex
import sys
from pathlib import Path
from typing import Any

from ..errors import DecodelabError, InvalidOption
from ..sampling.options import bounded_number
from ..text import print_error

DEFAULT_METHODS = ("plain", "hf", "hf-prompt-lookup")
QUICK_MAX_NEW_TOKENS = 16
DEFAULT_MAX_NEW_TOKENS = 64
# `--model tiny-random` is for smoke tests: peaked weights (so outputs are not flat noise) and a
# context long enough for every prompt of the packaged suites at one character per token.
TINY_RANDOM_OPTIONS: dict[str, Any] = {"vocab_size": 64, "init_std": 0.5, "context_length": 8192}


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `bench` subcommand to an argparse subparsers object; returns its parser."""
    parser = subparsers.add_parser(
        "bench",
        help="benchmark decoding methods side by side against plain decoding and HF generate",
        description="Run decoding methods side by side in one process on a prompt suite and report time per "
                    "token, speedups vs plain decoding and vs Hugging Face generate, forward passes per token, "
                    "mean accepted length, acceptance by position and peak memory (JSON, Markdown, PNG).",
    )
    parser.add_argument("--model", default=None, help="target model: pack name, path or tiny-random (default: packaged)")
    parser.add_argument("--draft", default=None, help="draft model for draft-model and hf-assisted methods")
    parser.add_argument("--methods", default=None,
                        help="comma-separated methods (default: plain,hf,hf-prompt-lookup, plus hf-assisted with "
                             "--draft); other names are registered methods (`decodelab methods`), e.g. beam:num_beams=4")
    parser.add_argument("--suite", default=None, help="packaged suite name or .jsonl path (default: specbench_mini)")
    parser.add_argument("--per-category", type=bounded_number(int, 1, 100_000, "--per-category"), default=None, metavar="N", help="first N prompts per category")
    parser.add_argument("--limit", type=bounded_number(int, 1, 1_000_000, "--limit"), default=None, metavar="N", help="first N prompts overall")
    parser.add_argument("--max-new-tokens", type=bounded_number(int, 1, 32768, "--max-new-tokens"), default=None,
                        help=f"new tokens per prompt (default {DEFAULT_MAX_NEW_TOKENS}; {QUICK_MAX_NEW_TOKENS} with --quick)")
    parser.add_argument("--temperature", type=bounded_number(float, 0, 100, "--temperature"), default=0.0, help="0 is greedy (default)")
    parser.add_argument("--seed", type=bounded_number(int, 0, 2**63 - 1, "--seed"), default=0, help="prompt i uses seed + i (default 0)")
    parser.add_argument("--threads", type=bounded_number(int, 1, 1024, "--threads"), default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--weights", default="auto", help="weight precision: auto (a GGUF file's own: int4/int8, bf16 activations), int4, int8, bf16, fp32 (target and draft)")
    parser.add_argument("--out", default=None, help="output folder (default bench-out/<timestamp>)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: quick suite, {QUICK_MAX_NEW_TOKENS} new tokens, one short warm-up run")
    parser.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE",
                        help="option given to every method of the run that is not built in (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--strategies", default=None,
                        help="compare decoding strategies instead (bench/strategies.py): e.g. greedy,nucleus,typical,"
                             "contrastive:penalty_alpha=0.6,dola; rep-n, distinct-n, mean log p, tokens/s")
    parser.add_argument("--lossy", default=None,
                        help="compare lossy methods with the exact ones instead (bench/lossy.py): e.g. draft,"
                             "lossy-route:min_confidence=0.8,lossy-relaxed:neighbours=4 (plain is always run); "
                             "speed, agreement with plain, lossy-token fraction, mean log p, accuracy")
    parser.add_argument("--scorer", default=None,
                        help="--strategies/--lossy: model that scores mean log p (default: --model)")
    parser.add_argument("--problems", type=bounded_number(int, 0, 10_000, "--problems"), default=0, metavar="N",
                        help="--strategies/--lossy: also accuracy on N checkable problems (bench/problems.py)")
    return parser


def run_bench_command(args: argparse.Namespace) -> int:
    """Run `decodelab bench` with parsed arguments; returns the exit code (2 on bad input)."""
    try:
        return _run(args)
    except DecodelabError as exc:
        print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _load_model(name: str | None, threads: int | None, weights: str = "auto"):
    from .. import load

    if name is not None and name.strip().lower() == "tiny-random":
        return load("tiny-random", threads=threads, weights=weights, **TINY_RANDOM_OPTIONS)
    return load(name, threads=threads, weights=weights)


def _run(args: argparse.Namespace) -> int:
    from .harness import run_bench
    from .methods import make_methods, parse_method_options
    from .report import busy_warning, summary_table, write_report
    from .suite import load_suite

    if args.threads is not None and args.threads < 1:
        raise InvalidOption(f"--threads must be >= 1, got {args.threads}")
    max_new_tokens = args.max_new_tokens
    if max_new_tokens is None:
        max_new_tokens = QUICK_MAX_NEW_TOKENS if args.quick else DEFAULT_MAX_NEW_TOKENS
    if max_new_tokens < 1:
        raise InvalidOption(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if args.temperature < 0:
        raise InvalidOption(f"--temperature must be >= 0, got {args.temperature}")
    suite_name = args.suite or ("quick" if args.quick else "specbench_mini")
    # Check everything cheap before loading models (seconds to minutes).
    suite = load_suite(suite_name, per_category=args.per_category, limit=args.limit)
    options = parse_method_options(args.method_option)
    if args.methods:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        if not methods:
            raise InvalidOption("--methods lists no method")
    else:
        methods = list(DEFAULT_METHODS) + (["hf-assisted"] if args.draft else [])

    if getattr(args, "strategies", None):
        from .strategies import run_strategies_command

        return run_strategies_command(args, _load_model(args.model, args.threads, args.weights))
    if getattr(args, "lossy", None):
        from .lossy import run_lossy_command

        return run_lossy_command(args, _load_model(args.model, args.threads, args.weights))
    lm = _load_model(args.model, args.threads, args.weights)
    draft = _load_model(args.draft, args.threads, args.weights) if args.draft else None
    built = make_methods(methods, lm, draft=draft, method_options=options)

    out_dir = Path(args.out) if args.out else Path("bench-out") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    command = "decodelab " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "decodelab bench"
    result = run_bench(
        lm, built, suite, max_new_tokens=max_new_tokens, temperature=args.temperature, seed=args.seed,
        draft=draft, method_options=options, warmup="once" if args.quick else True, threads=args.threads,
        progress=not args.no_progress, command=command,
    )
    paths = write_report(result, out_dir)
    print()
    print(summary_table(result))
    warning = busy_warning(result.machine)
    if warning:
        print(warning)
    if result.skipped:
        print(f"skipped {len(result.skipped)} prompt(s) longer than the context: "
              + ", ".join(s["prompt_id"] for s in result.skipped))
    for label, path in paths.items():
        print(f"{label}: {path}")
    return 0
