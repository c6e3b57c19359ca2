"""`decodelab watermark generate|detect`: the watermark family's command line.

Wire into decodelab/cli.py with `add_watermark_parser(subparsers)` and dispatch
`args.command == "watermark"` to `run_watermark_command(args)`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..decoding.generate import GenerationOptions
from ..errors import DecodelabError, InvalidOption
from ..sampling.config import SamplingConfig
from ..sampling.options import OneLineErrorParser, add_flags, bounded_number, option_specs
from ..text import print_error, read_text_file
from .detect import DEFAULT_RESAMPLES, DEFAULT_STOP_AFTER, MAX_RESAMPLES
from .schemes import DEFAULT_N, WatermarkOptions


def add_watermark_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("watermark", help="watermarked generation and detection")
    sub = parser.add_subparsers(dest="watermark_command", required=True)
    gen = sub.add_parser("generate", help="generate watermarked text")
    gen.add_argument("prompt")
    detect = sub.add_parser("detect", help="p-value per text (one JSON object per line)")
    detect.add_argument("file", help="one text per line, or a JSON list of texts / token-id lists ('-' = stdin)")
    for p in (gen, detect):
        p.add_argument("--model", default=None, help="model name or path (default: the packaged model)")
    _add_key_flags(gen)
    add_flags(gen, [s for s in option_specs(WatermarkOptions) if s.name in ("shift", "delta")])
    add_flags(gen.add_argument_group("generation"), [s for s in option_specs(GenerationOptions) if s.cli])
    add_flags(gen.add_argument_group("sampling"), [s for s in option_specs(SamplingConfig) if s.cli])
    gen.add_argument("--json", action="store_true", help="print a JSON object instead of the text")
    add_detect_flags(detect)
    detect.add_argument("--no-progress", action="store_true", help="no progress bar on long detections")
    detect.add_argument("--seed", type=bounded_number(int, 0, 2**63 - 1, "--seed"), default=0,
                        help="seed of the resampled keys")
    return parser


def _add_key_flags(parser: argparse.ArgumentParser) -> None:
    # the generation side's flags come from the option definitions (as `decodelab generate`'s do)
    parser.add_argument("--key", required=True, help="the secret watermark key (text)")
    parser.add_argument("--scheme", default="exp", help="exp | its | kgw (detect also: blackbox)")
    add_flags(parser, [s for s in option_specs(WatermarkOptions) if s.name in ("n", "gamma")])


def add_detect_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of detection (key, scheme and the test's options; not the model, not the seed);
    `detect_options(args)` turns them into `detect`'s keywords. `decodelab batch detect` shares them."""
    _add_key_flags(parser)
    parser.add_argument("--resamples", type=bounded_number(int, 0, MAX_RESAMPLES, "--resamples"),
                        default=DEFAULT_RESAMPLES, help="permutation-test resamples (EXP/ITS)")
    parser.add_argument("--stop-after", type=bounded_number(int, 1, MAX_RESAMPLES, "--stop-after"),
                        default=DEFAULT_STOP_AFTER,
                        help="Besag-Clifford early stopping: a text stops resampling at this many null hits "
                             "(valid p-values; only large p-values get coarser)")
    parser.add_argument("--all-resamples", action="store_true", help="run every resample (no early stopping)")
    parser.add_argument("--block", type=bounded_number(int, 1, 1_000_000, "--block"), default=None,
                        help="sub-block length k (default: whole text)")
    parser.add_argument("--no-edit", action="store_true", help="use the non-robust statistic")
    parser.add_argument("--gap-cost", type=bounded_number(float, 0, 1e6, "--gap-cost"), default=None,
                        help="EXP/ITS edit statistic: gap cost (the paper's gamma; default 0 for EXP, 0.4 for ITS)")


def detect_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords of `detect` (key and scheme included, seed not) from `add_detect_flags`'s flags."""
    if args.gamma is not None and args.scheme != "kgw":
        raise InvalidOption("--gamma is KGW's green fraction; the EXP/ITS detection gap cost is --gap-cost")
    options: dict[str, Any] = {"key": args.key, "scheme": args.scheme, "n": args.n or DEFAULT_N,
                               "resamples": args.resamples, "block": args.block,
                               "stop_after": None if args.all_resamples else args.stop_after,
                               "edit": not args.no_edit}
    if args.gamma is not None:
        options["green_fraction"] = args.gamma
    if args.gap_cost is not None:
        options["gap_cost"] = args.gap_cost
    return options


def _read_texts(path: str) -> list[Any]:
    raw = read_text_file(path, "the texts to detect")
    stripped = raw.strip()
    if stripped.startswith("["):
        try:
            texts = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InvalidOption(f"{path} is not valid JSON: {exc.msg}") from None
        if not isinstance(texts, list):
            raise InvalidOption(f"{path}: expected a JSON list of texts")
        return texts
    return [line for line in raw.splitlines() if line.strip()]


def run_watermark_command(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except DecodelabError as exc:
        print_error(exc)
        return exc.exit_code


def _run(args: argparse.Namespace) -> int:
    import decodelab as dl

    from . import detect, generate

    if args.watermark_command == "detect":
        options = detect_options(args)  # checked before the model loads
    lm = dl.load(args.model) if args.model else dl.load()
    if args.watermark_command == "generate":
        names = [s.name for spec_type in (WatermarkOptions, GenerationOptions, SamplingConfig)
                 for s in option_specs(spec_type) if s.cli]  # key included
        options = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
        out = generate(lm, args.prompt, scheme=args.scheme, **options)
        if args.json:
            print(json.dumps({"text": out.text, "token_ids": out.token_ids, "scheme": args.scheme}))
        else:
            print(out.text)
        return 0
    texts = _read_texts(args.file)
    results = detect(lm, texts, seed=args.seed, progress=False if args.no_progress else None, **options)
    for index, result in enumerate(results):
        print(json.dumps({"index": index, **result.as_dict()}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m decodelab.watermark.cli watermark ...`) until the main CLI wires it."""
    parser = OneLineErrorParser(prog="decodelab")
    sub = parser.add_subparsers(dest="command", required=True)
    add_watermark_parser(sub)
    return run_watermark_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
