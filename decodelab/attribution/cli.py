"""`decodelab attribute PROMPT [--output TEXT]`: ReAGent importance of the prompt's tokens, as
JSON, CSV (one row per prompt token and generated token) or the prompt coloured by importance.

Wired into decodelab/cli.py with `add_attribute_parser(subparsers)` / `run_attribute_command(args)`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..decoding.generate import GenerationOptions
from ..sampling.config import SamplingConfig
from ..sampling.options import add_flags, bounded_number, option_specs
from ..uncertainty.cli import add_model_flags, load_model
from .reagent import Attribution, ReagentOptions


def add_generation_group(parser: argparse.ArgumentParser) -> None:
    """--max-new-tokens, --seed and the sampler flags, for commands that may generate first."""
    add_flags(parser.add_argument_group("generation"), [s for s in option_specs(GenerationOptions) if s.cli])
    add_flags(parser.add_argument_group("sampling"), [s for s in option_specs(SamplingConfig) if s.cli])


def generation_flags(args: argparse.Namespace) -> dict[str, Any]:
    names = [s.name for s in option_specs(GenerationOptions) + option_specs(SamplingConfig) if s.cli]
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def add_attribute_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("attribute", help="ReAGent importance of prompt tokens for the generated tokens")
    parser.add_argument("prompt", help="prompt text")
    parser.add_argument("--output", default=None, help="the output to explain (default: generate it)")
    add_flags(parser.add_argument_group("ReAGent"), option_specs(ReagentOptions))
    add_generation_group(parser)
    add_model_flags(parser)
    return parser


def add_compress_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("compress", help="FrugalPrompt: keep the prompt's most attributed tokens")
    parser.add_argument("prompt", help="prompt text")
    parser.add_argument("--keep", type=bounded_number(float, 1e-9, 1.0, "--keep"), default=0.5, help="fraction of the prompt's tokens to keep (0, 1]")
    parser.add_argument("--output", default=None, help="the answer to attribute to (default: generate it)")
    add_flags(parser.add_argument_group("ReAGent"), option_specs(ReagentOptions))
    add_generation_group(parser)
    add_model_flags(parser)
    return parser


def attribution_rows(a: Attribution) -> list[dict[str, Any]]:
    """One row per (generated token, prompt token)."""
    return [{"output_position": t, "output_token": a.output_tokens[t], "prompt_position": i,
             "prompt_token": a.prompt_tokens[i], "importance": a.importance[t][i], "effect": a.effect[t][i],
             "effect_se": a.effect_se[t][i]} for t in range(len(a.output_tokens)) for i in a.positions]


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options = {s.name: getattr(args, s.name) for s in option_specs(ReagentOptions) if getattr(args, s.name) is not None}
    if args.output is None:
        options.update(generation_flags(args))
    return options


def run_attribute_command(args: argparse.Namespace) -> int:
    """`decodelab attribute` and `decodelab compress` (decodelab.cli.main reports a DecodelabError)."""
    if args.command == "compress":
        return _run_compress(args)
    from ..uncertainty.view import coloured_text, to_csv
    from .reagent import attribute

    lm = load_model(args)
    a = attribute(lm, args.prompt, args.output, chat=False if args.no_chat else None, **_options(args))
    if args.format == "json":
        print(json.dumps(a.as_dict(), ensure_ascii=False, indent=2))
    elif args.format == "csv":
        sys.stdout.write(to_csv(attribution_rows(a)))
    else:
        from rich.console import Console

        console = Console()
        shown = [i for i in range(len(a.prompt_tokens)) if i in a.positions]
        importance = a.prompt_importance()
        console.print(coloured_text([a.prompt_tokens[i] for i in shown], [importance[i] for i in shown], "importance"))
        console.print(f"[bold]output:[/bold] {a.text}")
        console.print(f"[dim]prompt coloured by mean ReAGent importance over {len(a.output_tokens)} generated tokens "
                      f"(green: important); {a.forwards} forwards, {a.seconds:.2f} s[/dim]")
    return 0


__all__ = ["add_attribute_parser", "add_compress_parser", "run_attribute_command", "attribution_rows", "add_generation_group",
           "generation_flags"]


def _run_compress(args: argparse.Namespace) -> int:
    from ..uncertainty.view import coloured_text, to_csv
    from .compress import compress

    lm = load_model(args)
    c = compress(lm, args.prompt, keep=args.keep, output=args.output, chat=False if args.no_chat else None,
                 **_options(args))
    if args.format == "json":
        print(json.dumps(c.as_dict(), ensure_ascii=False, indent=2))
    elif args.format == "csv":
        importance = c.attribution.prompt_importance()
        sys.stdout.write(to_csv([{"prompt_position": i, "prompt_token": c.attribution.prompt_tokens[i],
                                  "importance": importance[i], "kept": i in c.kept_positions}
                                 for i in c.attribution.positions]))
    else:
        from rich.console import Console

        console = Console()
        importance = c.attribution.prompt_importance()
        shown = c.attribution.positions
        console.print(coloured_text([c.attribution.prompt_tokens[i] for i in shown], [importance[i] for i in shown],
                                    "importance"))
        console.print(c.text)
        console.print(f"[dim]kept {c.kept_tokens} of {c.original_tokens} tokens[/dim]")
    return 0
