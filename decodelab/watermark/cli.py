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
from ..sampling.options import add_flags, option_specs
from .detect import DEFAULT_RESAMPLES, DEFAULT_STOP_AFTER
from .schemes import DEFAULT_N, WatermarkOptions


def add_watermark_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("watermark", help="watermarked generation and detection")
    sub = parser.add_subparsers(dest="watermark_command", required=True)
    gen = sub.add_parser("generate", help="generate watermarked text")
    gen.add_argument("prompt")
    detect = sub.add_parser("detect", help="p-value per text (one JSON object per line)")
    detect.add_argument("file", help="one text per line, or a JSON list of texts / token-id lists ('-' = stdin)")
    # the generation side's flags come from the option definitions (as `decodelab generate`'s do)
    shared = [s for s in option_specs(WatermarkOptions) if s.name in ("n", "gamma")]
    for p in (gen, detect):
        p.add_argument("--key", required=True, help="the secret watermark key (text)")
        p.add_argument("--scheme", default="exp", help="exp | its | kgw (detect also: blackbox)")
        p.add_argument("--model", default=None, help="model name or path (default: the packaged model)")
        add_flags(p, shared)
    add_flags(gen, [s for s in option_specs(WatermarkOptions) if s.name in ("shift", "delta")])
    add_flags(gen.add_argument_group("generation"), [s for s in option_specs(GenerationOptions) if s.cli])
    add_flags(gen.add_argument_group("sampling"), [s for s in option_specs(SamplingConfig) if s.cli])
    gen.add_argument("--json", action="store_true", help="print a JSON object instead of the text")
    detect.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="permutation-test resamples (EXP/ITS)")
    detect.add_argument("--stop-after", type=int, default=DEFAULT_STOP_AFTER,
                        help="Besag-Clifford early stopping: a text stops resampling at this many null hits "
                             "(valid p-values; only large p-values get coarser)")
    detect.add_argument("--all-resamples", action="store_true", help="run every resample (no early stopping)")
    detect.add_argument("--no-progress", action="store_true", help="no progress bar on long detections")
    detect.add_argument("--block", type=int, default=None, help="sub-block length k (default: whole text)")
    detect.add_argument("--no-edit", action="store_true", help="use the non-robust statistic")
    detect.add_argument("--gap-cost", type=float, default=None,
                        help="EXP/ITS edit statistic: gap cost (the paper's gamma; default 0 for EXP, 0.4 for ITS)")
    detect.add_argument("--seed", type=int, default=0, help="seed of the resampled keys")
    return parser


def _read_texts(path: str) -> list[Any]:
    try:
        raw = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as exc:
        raise InvalidOption(f"cannot read {path}: {exc.strerror}") from None
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
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def _run(args: argparse.Namespace) -> int:
    import decodelab as dl

    from . import detect, generate

    if args.gamma is not None and args.scheme != "kgw":
        raise InvalidOption("--gamma is KGW's green fraction; the EXP/ITS detection gap cost is --gap-cost")
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
    options: dict[str, Any] = {"n": args.n or DEFAULT_N, "resamples": args.resamples, "block": args.block,
                               "stop_after": None if args.all_resamples else args.stop_after,
                               "edit": not args.no_edit, "seed": args.seed, "progress": False if args.no_progress else None}
    if args.gamma is not None:
        options["green_fraction"] = args.gamma
    if args.gap_cost is not None:
        options["gap_cost"] = args.gap_cost
    results = detect(lm, texts, key=args.key, scheme=args.scheme, **options)
    for index, result in enumerate(results):
        print(json.dumps({"index": index, **result.as_dict()}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m decodelab.watermark.cli watermark ...`) until the main CLI wires it."""
    parser = argparse.ArgumentParser(prog="decodelab")
    sub = parser.add_subparsers(dest="command", required=True)
    add_watermark_parser(sub)
    return run_watermark_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
