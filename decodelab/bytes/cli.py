"""`decodelab bytes next|logprob|sample|heal|speed` and `decodelab fim`: the byte-level family's CLI.

Wired into decodelab/cli.py by one `_add_optional` line (`add_bytes_parser`, `run_bytes_command`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..decoding.generate import MAX_NEW_TOKENS
from ..errors import InvalidOption
from ..sampling.options import bounded_number


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model name or path (default: the packaged model)")
    p.add_argument("--weights", default="auto", help="weight precision: auto, int4, int8, bf16, fp32")


def add_bytes_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("bytes", help="exact byte-level probabilities, sampling and token healing")
    sub = parser.add_subparsers(dest="bytes_command", required=True)
    nxt = sub.add_parser("next", help="the likeliest next bytes after a text (which may end mid-token)")
    nxt.add_argument("text")
    nxt.add_argument("--top", type=bounded_number(int, 1, 257, "--top"), default=10, help="bytes to show (1..257)")
    lp = sub.add_parser("logprob", help="log P(the text starts with TEXT) at the byte level")
    lp.add_argument("text")
    lp.add_argument("--end", action="store_true", help="log P(the text is exactly TEXT)")
    smp = sub.add_parser("sample", help="sample a continuation byte by byte")
    smp.add_argument("text", nargs="?", default="")
    smp.add_argument("--max-bytes", type=bounded_number(int, 1, 65536, "--max-bytes"), default=64)
    smp.add_argument("--seed", type=bounded_number(int, 0, 2**63 - 1, "--seed"), default=0)
    heal = sub.add_parser("heal", help="generate after a prompt with exact token healing (vs plain)")
    heal.add_argument("prompt")
    heal.add_argument("--max-new-tokens", type=bounded_number(int, 1, MAX_NEW_TOKENS, "--max-new-tokens"), default=32)
    heal.add_argument("--temperature", type=bounded_number(float, 0.0, 100.0, "--temperature"), default=0.0)
    heal.add_argument("--seed", type=bounded_number(int, 0, 2**63 - 1, "--seed"), default=None)
    speed = sub.add_parser("speed", help="ByteLM scoring speed vs token-level scoring, side by side")
    speed.add_argument("texts", nargs="+")
    for p in (nxt, lp, smp, heal, speed):
        _model_flags(p)
        p.add_argument("--prune", type=bounded_number(float, 0.0, 0.5, "--prune"), default=1e-6, help="drop covers below this share of the mass (0: exact)")
    fim = subparsers.add_parser("fim", help="fill-in-the-middle at any character position (Qwen2.5-Coder)")
    fim.add_argument("--prefix", required=True)
    fim.add_argument("--suffix", required=True)
    fim.add_argument("--token-level", action="store_true", help="the plain token-level FIM prompt (baseline)")
    fim.add_argument("--max-new-tokens", type=bounded_number(int, 1, MAX_NEW_TOKENS, "--max-new-tokens"), default=64)
    _model_flags(fim)


def _text(value: str) -> bytes:
    """CLI text with Python escapes (\\n, \\xc3) allowed, as bytes."""
    try:
        return value.encode("latin-1", "backslashreplace").decode("unicode_escape").encode("latin-1")
    except UnicodeError:
        return value.encode("utf-8")


def run_bytes_command(args: argparse.Namespace) -> int:
    """Run `decodelab bytes ...` / `decodelab fim` (errors are printed by decodelab.cli.main)."""
    import decodelab as dl

    from .bytelm import ByteLM
    from .vocab import END

    lm = dl.load(args.model, weights=args.weights)
    if args.command == "fim":
        out = dl.fim(lm, args.prefix, args.suffix, byte_level=not args.token_level,
                     max_new_tokens=args.max_new_tokens)
        print(out.text)
        return 0
    if not 0 <= args.prune < 1:
        raise InvalidOption("--prune must be in [0, 1)")
    if args.bytes_command == "heal":
        from .heal import heal

        plain = dl.generate(lm, args.prompt, chat=False, temperature=args.temperature, seed=args.seed,
                            max_new_tokens=args.max_new_tokens)
        healed = heal(lm, args.prompt, temperature=args.temperature, seed=args.seed,
                      max_new_tokens=args.max_new_tokens)
        print(json.dumps({"plain": plain.text, "healed": healed.text, "backed_up": healed.backed_up.decode(
            "utf-8", "replace")}, ensure_ascii=False, indent=1))
        return 0
    if args.bytes_command == "speed":
        from .bench import bytelm_speed

        print(json.dumps(bytelm_speed(lm, args.texts), indent=1))
        return 0
    bl = ByteLM(lm, prune=args.prune)
    if args.bytes_command == "next":
        if not 1 <= args.top <= 257:
            raise InvalidOption("--top must be in 1..257")
        law = bl.next_byte_logprobs(_text(args.text))
        top = law.topk(args.top)
        for value, index in zip(top.values.tolist(), top.indices.tolist()):
            label = "<end>" if index == END else repr(bytes([index]))
            print(f"{label}\t{value:.4f}")
    elif args.bytes_command == "logprob":
        print(f"{bl.logprob(_text(args.text), end=args.end):.6f}")
    else:
        prefix = _text(args.text)
        print((prefix + bl.sample(args.max_bytes, prefix=prefix, seed=args.seed)).decode("utf-8", "replace"))
    return 0
