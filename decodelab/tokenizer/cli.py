"""`decodelab tokenizer mixture|digits|charbench`: the tokenizer family's CLI.

Wired into decodelab/cli.py by one `_add_optional` line (`add_tokenizer_parser`, `run_tokenizer_command`).
Flags of the analyses are derived from their option dataclasses (tokenizer/options.py), so they have
the same names, ranges and help as the Python keywords.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from ..errors import InvalidOption
from ..sampling.options import add_flags, bounded_number, option_specs
from .corpora import BUILTIN
from .mixture_lp import MAX_MIX_CHARS
from .options import CharbenchOptions, DigitsOptions, MixtureOptions


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model pack name, HF folder or .gguf file (default: packaged SmolLM2)")
    p.add_argument("--weights", default="auto", help="weight precision: auto, int4, int8, bf16, fp32")
    p.add_argument("--json", action="store_true", help="print the report as JSON (default: a table)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_tokenizer_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("tokenizer", help="tokenizer analyses: merge-list mixture inference, digit "
                                   "grouping, character-level suite")
    sub = parser.add_subparsers(dest="tokenizer_command", required=True)
    mix = sub.add_parser("mixture", help="infer the category shares of a BPE tokenizer's training text from its "
                         "merge list (Hayase et al. 2024)")
    mix.add_argument("--tokenizer", default=None, help="a tokenizer.json file, or a model name or path "
                     "(its tokenizer); or use --train")
    mix.add_argument("--category", action="append", default=None, metavar="NAME=FILE",
                     help="a category sample from a UTF-8 text file (repeatable; default: the built-in categories)")
    mix.add_argument("--builtin", default=None, help=f"comma-separated built-in categories ({', '.join(BUILTIN)}; "
                     "default: all, unless --category is given)")
    mix.add_argument("--train", default=None, metavar="NAME=SHARE,...",
                     help="train a byte-level BPE here on this known mixture of the categories' training halves, "
                     "then infer it back (a validation run)")
    mix.add_argument("--train-chars", type=bounded_number(int, 1000, MAX_MIX_CHARS, "--train-chars"), default=300_000,
                     help=f"characters of training text for --train (at most {MAX_MIX_CHARS})")
    add_flags(mix.add_argument_group("mixture options"), option_specs(MixtureOptions))
    _model_flags(mix)
    dig = sub.add_parser("digits", help="arithmetic accuracy with digits grouped left-to-right vs right-to-left "
                         "(Singh & Strouse 2024)")
    add_flags(dig.add_argument_group("digits options"), option_specs(DigitsOptions))
    _model_flags(dig)
    char = sub.add_parser("charbench", help="count/locate/spell letters vs tokenization features (CharBench-style)")
    add_flags(char.add_argument_group("charbench options"), option_specs(CharbenchOptions))
    _model_flags(char)


def _options(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    return {s.name: getattr(args, s.name) for s in option_specs(cls) if getattr(args, s.name, None) is not None}


def _pairs(text: str, flag: str) -> dict[str, str]:
    out = {}
    for part in text.split(","):
        if "=" not in part:
            raise InvalidOption(f"{flag} takes NAME=VALUE items, got {part!r}", param=flag)
        name, value = part.split("=", 1)
        out[name.strip()] = value.strip()
    return out


def _categories(args: argparse.Namespace) -> Any:
    if args.category:
        cats: dict[str, Any] = {}
        for item in args.category:
            cats.update(_pairs(item, "--category"))
        if args.builtin:
            from .corpora import builtin_categories

            cats.update(builtin_categories([n.strip() for n in args.builtin.split(",")], args.max_chars or 1_000_000))
        return cats
    return [n.strip() for n in args.builtin.split(",")] if args.builtin else None


def _mixture(args: argparse.Namespace) -> dict[str, Any]:
    from .api import mixture, resolve_categories
    from .bpe import train_bpe
    from .mixture_lp import mean_absolute_error, mixed_texts

    options = _options(args, MixtureOptions)
    cats = resolve_categories(_categories(args), options.get("max_chars", MixtureOptions().max_chars))
    if (args.train is None) == (args.tokenizer is None):
        raise InvalidOption("give exactly one of --tokenizer and --train", param="tokenizer")
    truth = None
    if args.train is not None:
        try:
            truth = {k: float(v) for k, v in _pairs(args.train, "--train").items()}
        except ValueError:
            raise InvalidOption("--train shares must be numbers (NAME=SHARE,...)", param="train") from None
        texts = mixed_texts(cats, truth, args.train_chars)
        total = sum(truth.values())
        truth = {k: truth.get(k, 0.0) / total for k in cats}
        tokenizer = train_bpe(texts, options.get("num_merges", MixtureOptions().num_merges))
    elif os.path.isfile(args.tokenizer) and args.tokenizer.endswith(".json"):
        tokenizer = args.tokenizer
    else:
        from ..models import load

        tokenizer = load(args.tokenizer, weights=args.weights)
    result = mixture(tokenizer, cats, progress=not args.no_progress, **options)
    out = result.as_dict()
    out["categories"] = {name: {"source": c.source, "sample_chars": c.chars()} for name, c in cats.items()}
    if truth is not None:
        out["true_proportions"] = truth
        out["mean_absolute_error"] = mean_absolute_error(truth, result.proportions)
    return out


def _mixture_table(out: dict[str, Any]) -> str:
    truth = out.get("true_proportions")
    lines = ["| category | inferred share" + (" | true share |" if truth else " |"), "|---|---|" + ("---|" if truth else "")]
    for name, share in out["proportions"].items():
        lines.append(f"| {name} | {share:.4f} |" + (f" {truth[name]:.4f} |" if truth else ""))
    lines.append(f"\n{out['merges_used']} merges, {out['constraints']} constraints, total slack "
                 f"{out['total_slack']:.4g}, {out['seconds']:.1f} s")
    if truth:
        lines.append(f"mean absolute error {out['mean_absolute_error']:.4f}")
    return "\n".join(lines)


def run_tokenizer_command(args: argparse.Namespace) -> int:
    """Run `decodelab tokenizer ...` (errors are printed by decodelab.cli.main)."""
    if args.tokenizer_command == "mixture":
        out = _mixture(args)
        print(json.dumps(out, indent=1) if args.json else _mixture_table(out))
        return 0
    from ..models import load

    lm = load(args.model, weights=args.weights)
    if args.tokenizer_command == "digits":
        from .digit_grouping import digits

        report = digits(lm, progress=not args.no_progress, **_options(args, DigitsOptions))
    else:
        from .char_suite import charbench

        report = charbench(lm, progress=not args.no_progress, **_options(args, CharbenchOptions))
    print(json.dumps(report.as_dict(), indent=1) if args.json else report.table())
    return 0


__all__ = ["add_tokenizer_parser", "run_tokenizer_command"]
