"""`decodelab serve`: the argparse hook the main CLI imports (`add_serve_parser`, `run_serve_command`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import DecodelabError, InvalidOption
from ..sampling.options import OneLineErrorParser, bounded_number
from ..text import print_error

port_number = bounded_number(int, 0, 65535, "a port")


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_serve_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `serve` subcommand to a subparsers object."""
    parser = subparsers.add_parser(
        "serve", help="OpenAI-compatible HTTP server and token viewer page",
        description="Serve models over an OpenAI-compatible API (/v1/completions, /v1/chat/completions), "
                    "with the token viewer at /. Binds 127.0.0.1 unless told otherwise.")
    add_serve_arguments(parser)
    return parser


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", default=None, metavar="NAME",
                        help="model to serve (a pack name, tiny-random, an HF folder or a .gguf file); "
                             "repeat or comma-separate for several; the first is the default "
                             "(default: the packaged smollm2-135m)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8000, help="port (default 8000; 0: any free port)")
    parser.add_argument("--api-key", default=None,
                        help="require 'Authorization: Bearer KEY' on /v1/* and /metrics "
                             "(default: $DECODELAB_API_KEY, else no key)")
    parser.add_argument("--max-batch", type=bounded_number(int, 1, 4096, "--max-batch"), default=16,
                        help="rows per batch (default 16, at most 4096)")
    parser.add_argument("--queue-size", type=bounded_number(int, 1, 100_000, "--queue-size"), default=256,
                        help="queued requests before 429 (default 256, at most 100000)")
    parser.add_argument("--continuous-batching", action=argparse.BooleanOptionalAction, default=True,
                        help="queued requests join the running batch between steps (default on)")
    parser.add_argument("--max-tokens-limit", type=bounded_number(int, 1, 32768, "--max-tokens-limit"), default=1024,
                        help="largest max_tokens a request may ask for (default 1024, at most 32768)")
    parser.add_argument("--timeout", type=bounded_number(float, 0.1, 86400, "--timeout"), default=120.0,
                        help="seconds a request may take, queueing included (default 120, at most a day)")
    parser.add_argument("--measure-costs", action=argparse.BooleanOptionalAction, default=True,
                        help="measure each model's verify cost t(n) at start, once per machine (default on); "
                             "requests never measure it")
    parser.add_argument("--threads", type=bounded_number(int, 1, 1024, "--threads"), default=None,
                        help="torch threads (default: torch's choice)")
    parser.add_argument("--weights", default="auto", help="weight precision: auto (a GGUF file's own: int4/int8, bf16 activations), int4, int8, bf16, fp32")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def model_names(values: list[str] | None) -> list[str]:
    from ..models import DEFAULT_MODEL

    names = [part.strip() for value in (values or []) for part in value.split(",") if part.strip()]
    return names or [DEFAULT_MODEL]


def served_id(name: str) -> str:
    """The id clients use for a model given on the command line."""
    from ..models.registry import find_pack

    pack = find_pack(name)
    if pack is not None:
        return pack.name
    if name.strip().lower() == "tiny-random":
        return "tiny-random"
    path = Path(name)
    return path.stem if path.suffix == ".gguf" else path.name


def load_models(names: list[str], *, threads: int | None = None, weights: str = "auto") -> tuple[dict, dict[str, str]]:
    """Load each model once; returns ({id: LM}, {alias: id})."""
    from ..models import load
    from ..models.registry import find_pack

    models, aliases = {}, {}
    for name in names:
        key = served_id(name)
        if key in models:
            continue
        models[key] = load(name, threads=threads, weights=weights)
        pack = find_pack(name)
        for alias in (pack.aliases if pack else ()):
            aliases[alias] = key
    return models, aliases


def run_serve_command(args: argparse.Namespace) -> int:
    """Load the models and serve until interrupted; returns the exit code."""
    import os

    from .app import ServerConfig, create_app
    from .runner import serve

    for flag in ("max_batch", "queue_size", "max_tokens_limit", "port"):
        if getattr(args, flag) < (0 if flag == "port" else 1):
            raise InvalidOption(f"--{flag.replace('_', '-')} must be positive")
    if args.timeout <= 0:
        raise InvalidOption("--timeout must be positive")
    api_key = args.api_key or os.environ.get("DECODELAB_API_KEY") or None
    if args.host not in LOOPBACK and not api_key:
        print(f"warning: serving on {args.host} without an API key; anyone who can reach it can use it",
              file=sys.stderr)
    models, aliases = load_models(model_names(args.model), threads=args.threads, weights=args.weights)
    config = ServerConfig(api_key=api_key, max_batch=args.max_batch, queue_size=args.queue_size,
                          max_tokens_limit=args.max_tokens_limit, timeout=args.timeout,
                          continuous_batching=args.continuous_batching, measure_costs=args.measure_costs)
    app = create_app(models, config, aliases=aliases)
    print(f"decodelab: serving {', '.join(models)} on http://{args.host}:{args.port} (viewer at /)", file=sys.stderr)
    serve(app, args.host, args.port, log_level=args.log_level)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m decodelab.server`: the same as `decodelab serve`."""
    parser = OneLineErrorParser(prog="python -m decodelab.server")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_serve_command(args)
    except DecodelabError as exc:
        print_error(exc)
        return exc.exit_code
