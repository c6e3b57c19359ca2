"""`decodelab` command line: generate, chat, models, bench, serve, watermark.

Every failure on bad input prints one line `error: ...` and exits non-zero (2); no tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .errors import DecodelabError, InvalidOption

SAMPLER_FLAGS: list[tuple[str, type, str]] = [
    ("temperature", float, "sampling temperature; 0 = greedy (default: the model's generation config, else greedy)"),
    ("top_k", int, "keep the k most likely tokens (0 = off)"),
    ("top_p", float, "nucleus sampling mass in (0, 1]"),
    ("min_p", float, "drop tokens below min_p x the top probability"),
    ("typical_p", float, "locally typical sampling mass in (0, 1]"),
    ("epsilon_cutoff", float, "epsilon sampling: drop tokens with probability below this"),
    ("eta_cutoff", float, "eta sampling cutoff"),
    ("repetition_penalty", float, "CTRL repetition penalty (>1 discourages repeats)"),
    ("frequency_penalty", float, "OpenAI-style frequency penalty in [-2, 2]"),
    ("presence_penalty", float, "OpenAI-style presence penalty in [-2, 2]"),
]


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    key, value = text.split("=", 1)
    return key.strip().replace("-", "_"), value.strip()


def parse_value(value: str) -> Any:
    """'5' -> 5, '0.5' -> 0.5, 'true' -> True, otherwise the string."""
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def add_generation_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by generate and chat: model, sampler, stop, seed, speculative method."""
    parser.add_argument("--model", default=None, help="model pack name, HF folder or .gguf file (default: packaged SmolLM2)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="tokens to generate (default 256)")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    parser.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    for name, kind, text in SAMPLER_FLAGS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None, help=text)
    parser.add_argument("--logit-bias", action="append", type=_key_value, default=None, metavar="TOKEN=BIAS",
                        help="add BIAS to TOKEN's logit (repeatable)")
    parser.add_argument("--spec", "--speculative", dest="speculative", default=None,
                        help="speculative decoding method (e.g. prompt-lookup, draft, layer-skip); see `decodelab methods`")
    parser.add_argument("--draft", default=None, help="draft model for --spec draft")
    parser.add_argument("--spec-option", action="append", type=_key_value, default=None, metavar="KEY=VALUE",
                        help="option of the speculative method, e.g. k=8 (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--weights", default="auto", help="weight precision: auto (a GGUF file's own: int4/int8, bf16 activations), int4, int8, bf16, fp32")
    from .constrain.api import add_constraint_flags

    add_constraint_flags(parser)


def generation_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {name: getattr(args, name) for name, _, _ in SAMPLER_FLAGS}
    options.update(max_new_tokens=args.max_new_tokens, seed=args.seed, stop=args.stop)
    if args.logit_bias:
        try:
            options["logit_bias"] = {int(k): float(v) for k, v in args.logit_bias}
        except ValueError:
            raise InvalidOption("--logit-bias takes TOKEN_ID=NUMBER") from None
    from .constrain.api import constraint_options_from_args

    options.update(constraint_options_from_args(args))
    return {k: v for k, v in options.items() if v is not None}


def speculative_from_args(args: argparse.Namespace, lm) -> Any:
    if not args.speculative:
        if args.draft or args.spec_option:
            raise InvalidOption("--draft and --spec-option need --spec METHOD")
        return None
    from . import load
    from .speculative import make

    draft = load(args.draft) if args.draft else None
    options = {k: parse_value(v) for k, v in (args.spec_option or [])}
    return make(args.speculative, target=lm, draft=draft, **options)


def _load(args: argparse.Namespace):
    from . import load

    return load(args.model, threads=args.threads, weights=getattr(args, "weights", "auto"))


def cmd_generate(args: argparse.Namespace) -> int:
    from .decoding.generate import stream_events

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    lm = _load(args)
    options = generation_options(args)
    if args.no_chat:
        options["chat"] = False
    speculative = speculative_from_args(args, lm)
    events = stream_events(lm, prompt, speculative=speculative, top_logprobs=args.top_logprobs, **options)
    outputs = None
    try:
        while True:
            event = next(events)
            if not args.json and event.text:
                sys.stdout.write(event.text)
                sys.stdout.flush()
    except StopIteration as done:
        outputs = done.value
    out = outputs[0]
    if args.json:
        print(json.dumps(out.as_dict(), ensure_ascii=False, indent=2))
    else:
        sys.stdout.write("\n")
        if args.stats:
            s = out.stats
            print(
                f"[{s.new_tokens} tokens, {s.tokens_per_second:.1f} tok/s, {s.target_forwards} target forwards, "
                f"mean accepted {s.mean_accepted_length:.2f}, finish: {out.finish_reason}]",
                file=sys.stderr,
            )
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from .decoding.generate import stream

    lm = _load(args)
    options = generation_options(args)
    speculative = speculative_from_args(args, lm)
    messages: list[dict[str, str]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    print(f"chatting with {lm.name}; empty line or Ctrl-D to quit", file=sys.stderr)
    while True:
        try:
            user = input("> ")
        except EOFError:
            break
        if not user.strip():
            break
        messages.append({"role": "user", "content": user})
        reply = ""
        for piece in stream(lm, messages, speculative=speculative, **options):
            reply += piece
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": reply})
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models import installed_packs, pull

    if args.models_command == "pull":
        pack = pull(args.name)
        print(f"{pack.name} installed ({pack.size_bytes() / 1e6:.0f} MB)")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "installed", "size", "description")
    for pack, installed, size in installed_packs():
        table.add_row(pack.name, "yes" if installed else "no", f"{size / 1e6:.0f} MB" if installed else "-",
                      pack.description)
    table.add_row("tiny-random", "built in", "-", "seeded random Llama for tests (vocab_size, seed, num_layers, init_std)")
    Console().print(table)
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from .speculative import METHODS

    for name, (_, description) in METHODS.items():
        print(f"{name:18s} {description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="decodelab", description="Token-level inference with causal LMs")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate a continuation (streams to stdout)")
    gen.add_argument("prompt", help="prompt text, or - to read stdin")
    add_generation_flags(gen)
    gen.add_argument("--no-chat", action="store_true", help="do not apply the chat template")
    gen.add_argument("--json", action="store_true", help="print text, token ids, per-token records and stats as JSON")
    gen.add_argument("--top-logprobs", type=int, default=5, help="alternatives per token in records")
    gen.add_argument("--stats", action="store_true", help="print speed and acceptance statistics to stderr")
    gen.set_defaults(handler=cmd_generate)

    chat = sub.add_parser("chat", help="interactive streaming chat")
    add_generation_flags(chat)
    chat.add_argument("--system", default=None, help="system prompt")
    chat.set_defaults(handler=cmd_chat)

    models = sub.add_parser("models", help="list or install model packs")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    models_sub.add_parser("list", help="known packs, whether installed, size")
    pull_parser = models_sub.add_parser("pull", help="install a pack from PyPI")
    pull_parser.add_argument("name")
    models.set_defaults(handler=cmd_models)

    methods = sub.add_parser("methods", help="list speculative decoding methods")
    methods.set_defaults(handler=cmd_methods)

    for module, adder, runner in (
        ("decodelab.bench.cli", "add_bench_parser", "run_bench_command"),
        ("decodelab.server.cli", "add_serve_parser", "run_serve_command"),
        ("decodelab.watermark.cli", "add_watermark_parser", "run_watermark_command"),
    ):
        _add_optional(sub, module, adder, runner)
    return parser


def _add_optional(sub, module: str, adder: str, runner: str) -> None:
    """Subcommands that live in their family's folder."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError:
        return
    if hasattr(mod, adder) and hasattr(mod, runner):
        before = set(sub.choices)
        getattr(mod, adder)(sub)
        for name in set(sub.choices) - before:
            sub.choices[name].set_defaults(handler=getattr(mod, runner))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except DecodelabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
