"""`decodelab` command line: generate, chat, models, bench, serve, watermark, batch.

Every failure on bad input prints one line `error: ...` and exits non-zero (2); no tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .errors import DecodelabError, InvalidOption, InvalidPrompt
from .sampling.options import OneLineErrorParser, add_flags, bounded_number
from .text import first_surrogate, print_error, read_text_file


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    key, value = text.split("=", 1)
    return key.strip().replace("-", "_"), value.strip()


def parse_value(value: str) -> Any:
    """'5' -> 5, '0.5' -> 0.5, 'true' -> True, otherwise the string."""
    from .sampling.options import parse_cli_value

    return parse_cli_value(value)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _cli_specs() -> list[tuple[str, list[Any]]]:
    """(group title, option specs) of every top-level option with a flag of its own."""
    from .decoding.generate import GenerationOptions
    from .decoding.method import flat_option_specs, methods, slots
    from .sampling.config import SamplingConfig
    from .sampling.options import option_specs

    groups = [("generation", option_specs(GenerationOptions)), ("sampling", option_specs(SamplingConfig))]
    seen: set[str] = set()
    flat = {s.name: s for s in flat_option_specs()}
    for slot in slots():
        if slot.flat:
            names = [n for m in methods(slot.name) for n in m.option_names() if n not in seen]
            seen |= set(names)
            groups.append((slot.help, [flat[n] for n in dict.fromkeys(names)]))
    return [(title, [s for s in specs if s.cli]) for title, specs in groups]


def add_generation_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by generate and chat, derived from the option definitions: model, generation,
    sampler, every registered method's options."""
    from .decoding.method import slots

    parser.add_argument("--model", default=None, help="model pack name, HF folder or .gguf file (default: packaged SmolLM2)")
    parser.add_argument("--threads", type=bounded_number(int, 1, 1024, "--threads"), default=None, help="torch threads")
    for title, specs in _cli_specs():
        add_flags(parser.add_argument_group(title), specs)
    parser.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    parser.add_argument("--logit-bias", action="append", type=_key_value, default=None, metavar="TOKEN=BIAS",
                        help="add BIAS to TOKEN's logit (repeatable)")
    for slot in slots():
        if slot.flat:
            continue
        names = [_flag(slot.selector)] + (["--spec"] if slot.name == "speculative" else [])
        what = "scheme" if slot.name_key else "method"
        parser.add_argument(*names, dest=slot.selector, default=None, metavar=what.upper(),
                            help=f"{slot.help}: the {what} (see `decodelab methods`)")
        option_flags = [_flag(f"{slot.name}_option")] + (["--spec-option"] if slot.name == "speculative" else [])
        parser.add_argument(*option_flags, dest=f"{slot.name}_option", action="append",
                            type=_key_value, default=None, metavar="KEY=VALUE",
                            help=f"an option of the {slot.name} method (repeatable)")
    parser.add_argument("--draft", default=None, help="draft model for --spec draft (and the tree methods)")
    parser.add_argument("--weights", default="auto", help="weight precision: auto (a GGUF file's own: int4/int8, "
                        "bf16 activations), int4, int8, bf16, fp32")


MAX_OPTION_FILE_CHARS = 1_000_000


def read_option_file(path: str, flag: str) -> str:
    """The text of a file-valued option (--json-schema FILE, --grammar FILE); a missing, binary or
    huge file is an InvalidOption, never a traceback."""
    return read_text_file(path, flag, max_chars=MAX_OPTION_FILE_CHARS)


def generation_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword options of `dl.generate` from parsed flags (files read here)."""
    from .decoding.method import slots

    options: dict[str, Any] = {}
    for _, specs in _cli_specs():
        for spec in specs:
            value = getattr(args, spec.name, None)
            if value is not None:
                options[spec.name] = read_option_file(value, _flag(spec.name)) if spec.file else value
    options["stop"] = args.stop
    if args.logit_bias:
        try:
            options["logit_bias"] = {int(k): float(v) for k, v in args.logit_bias}
        except ValueError:
            raise InvalidOption("--logit-bias takes TOKEN_ID=NUMBER") from None
    for slot in slots():
        if slot.flat:
            continue
        name = getattr(args, slot.selector, None)
        extra = {k: parse_value(v) for k, v in (getattr(args, f"{slot.name}_option", None) or [])}
        if name is None:
            if extra:
                raise InvalidOption(f"{_flag(slot.name + '_option')} needs {_flag(slot.selector)}")
            continue
        if slot.name == "speculative" and args.draft:
            extra["draft"] = args.draft
        if slot.name_key is not None:
            options[slot.selector] = {slot.name_key: name, **extra}
        else:
            options[slot.selector] = name
            if extra:
                options[slot.options_keyword] = extra
    if args.draft and args.speculative is None:
        raise InvalidOption("--draft needs --spec METHOD")
    return {k: v for k, v in options.items() if v is not None}


def _load(args: argparse.Namespace):
    from . import load

    return load(args.model, threads=args.threads, weights=getattr(args, "weights", "auto"))


def cmd_generate(args: argparse.Namespace) -> int:
    from .decoding.generate import stream_events

    prompt = read_text_file("-", "the prompt", error=InvalidPrompt) if args.prompt == "-" else args.prompt
    lm = _load(args)
    options = generation_options(args)
    if args.no_chat:
        options["chat"] = False
    events = stream_events(lm, prompt, top_logprobs=args.top_logprobs, **options)
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
    messages: list[dict[str, str]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    print(f"chatting with {lm.name}; empty line or Ctrl-D to quit", file=sys.stderr)
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")  # a bad line is reported, not a traceback
    while True:
        try:
            user = input("> ")
        except EOFError:
            break
        if first_surrogate(user) is not None:  # the terminal or pipe sent bytes that are not UTF-8
            print("error: that line is not UTF-8 text; type it again", file=sys.stderr)
            continue
        if not user.strip():
            break
        messages.append({"role": "user", "content": user})
        reply = ""
        for piece in stream(lm, messages, **options):
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
    """Every registered method with its paper, capabilities and options (from the one definition)."""
    from .decoding.method import methods, slots

    described = [m.describe() for m in methods() if args.slot in (None, m.slot)]
    if args.json:
        print(json.dumps(described, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for slot in slots():
        rows = [m for m in described if m["slot"] == slot.name]
        if not rows:
            continue
        how = f"--{slot.selector.replace('_', '-')} NAME" if not slot.flat else "its own options"
        table = Table("method", "what", "options", title=f"{slot.name}: {slot.help} (selected by {how})",
                      title_justify="left", show_lines=True)
        for m in rows:
            options = "\n".join(f"{o['name']}={o['default']!r} {_range(o)} {o['help']}" for o in m["options"])
            flags = ("lossless" if m["lossless"] else "LOSSY (flags its tokens)" if m.get("lossy") else "not lossless") \
                + (", needs sampling" if m["needs_sampling"] else "")
            table.add_row(m["name"], f"{m['summary']}\n[dim]{m['paper']}[/dim]\n{flags}", options)
        console.print(table)
    return 0


def _range(o: dict[str, Any]) -> str:
    from .sampling.options import OptionSpec

    keys = ("ge", "gt", "le", "lt")
    spec = OptionSpec(o["name"], o["type"], "", choices=tuple(o["choices"]) if "choices" in o else None,
                      **{k: o[k] for k in keys if k in o})
    text = spec.describe_range()
    return f"[{text}]" if text else ""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="decodelab", description="Token-level inference with causal LMs")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate a continuation (streams to stdout)")
    gen.add_argument("prompt", help="prompt text, or - to read stdin")
    add_generation_flags(gen)
    gen.add_argument("--no-chat", action="store_true", help="do not apply the chat template")
    gen.add_argument("--json", action="store_true", help="print text, token ids, per-token records and stats as JSON")
    gen.add_argument("--top-logprobs", type=bounded_number(int, 0, 20, "--top-logprobs"), default=5,
                     help="alternatives per token in records (at most 20)")
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

    methods = sub.add_parser("methods", help="list the registered methods and their options")
    methods.add_argument("slot", nargs="?", default=None, help="only this kind (speculative, constraint, ...)")
    methods.add_argument("--json", action="store_true", help="machine-readable")
    methods.set_defaults(handler=cmd_methods)

    for module, adder, runner in (
        ("decodelab.bench.cli", "add_bench_parser", "run_bench_command"),
        ("decodelab.server.cli", "add_serve_parser", "run_serve_command"),
        ("decodelab.watermark.cli", "add_watermark_parser", "run_watermark_command"),
        ("decodelab.batch.cli", "add_batch_parser", "run_batch_command"),
        ("decodelab.strategies.cli", "add_knn_parser", "run_knn_command"),
        ("decodelab.uncertainty.cli", "add_score_parser", "run_score_command"),
        ("decodelab.attribution.cli", "add_attribute_parser", "run_attribute_command"),
        ("decodelab.attribution.cli", "add_compress_parser", "run_attribute_command"),
        ("decodelab.bytes.cli", "add_bytes_parser", "run_bytes_command"),
        ("decodelab.provenance.cli", "add_provenance_parser", "run_provenance_command"),
        ("decodelab.tokenizer.cli", "add_tokenizer_parser", "run_tokenizer_command"),
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
        print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
