"""`decodelab score PROMPT COMPLETION`: per-token uncertainty of a text as JSON, CSV or a coloured view.

Wired into decodelab/cli.py with `add_score_parser(subparsers)` / `run_score_command(args)`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..sampling.options import bounded_number
from .token_scores import TOKEN_SCORES

FORMATS = ("view", "json", "csv")


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model pack name, HF folder or .gguf file (default: packaged SmolLM2)")
    parser.add_argument("--weights", default="auto", help="weight precision: auto, int4, int8, bf16, fp32")
    parser.add_argument("--threads", type=bounded_number(int, 1, 1024, "--threads"), default=None, help="torch threads")
    parser.add_argument("--no-chat", action="store_true", help="do not apply the chat template to the prompt")
    parser.add_argument("--format", choices=FORMATS, default="view",
                        help="view: coloured tokens in the terminal; json; csv (one row per token)")


def add_score_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("score", help="per-token uncertainty of a completion after a prompt")
    parser.add_argument("prompt", help="prompt text")
    parser.add_argument("completion", help="completion text ('-' reads stdin)")
    parser.add_argument("--scores", default=None, help=f"comma-separated: {', '.join(TOKEN_SCORES)} (default: all)")
    parser.add_argument("--colour-by", default=None, help="the column that colours the view (default: the first)")
    add_model_flags(parser)
    return parser


def load_model(args: argparse.Namespace):
    from ..models import load

    return load(args.model, threads=args.threads, weights=args.weights)


def run_score_command(args: argparse.Namespace) -> int:
    """`decodelab score` (decodelab.cli.main turns a DecodelabError into one line and exit 2)."""
    from ..errors import InvalidOption
    from .score import score
    from .view import coloured_text, to_csv

    completion = sys.stdin.read() if args.completion == "-" else args.completion
    lm = load_model(args)
    result = score(lm, args.prompt, completion, scores=args.scores, chat=False if args.no_chat else None)
    if args.format == "json":
        print(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
    elif args.format == "csv":
        sys.stdout.write(to_csv(result.tokens))
    else:
        from rich.console import Console

        column = args.colour_by or result.columns[0]
        if column not in result.columns:
            raise InvalidOption(f"--colour-by {column}: not among the scores ({', '.join(result.columns)})")
        console = Console()
        console.print(coloured_text([r["text"] for r in result.tokens], result.column(column), column))
        console.print(f"[dim]coloured by {column} (green: confident); perplexity {result.perplexity:.3f}, "
                      f"mean entropy {result.mean_entropy:.3f} nats[/dim]")
    return 0


__all__ = ["add_score_parser", "run_score_command", "add_model_flags", "load_model"]
