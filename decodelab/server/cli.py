"""`decodelab serve`: the argparse hook the main CLI imports (`add_serve_parser`, `run_serve_command`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import DecodelabError, InvalidOption


def port_number(text: str) -> int:
    """A TCP port from the command line, checked before any model loads."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port is an integer in [0, 65535], got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is an integer in [0, 65535], got {port}")
    return port


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
    parser.add_argument("--max-batch", type=int, default=16, help="rows per batch (default 16)")
    parser.add_argument("--queue-size", type=int, default=256, help="queued requests before 429 (default 256)")
    parser.add_argument("--continuous-batching", action=argparse.BooleanOptionalAction, default=True,
                        help="queued requests join the running batch between steps (default on)")
    parser.add_argument("--max-tokens-limit", type=int, default=1024,
                        help="largest max_tokens a request may ask for (default 1024)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds a request may take, queueing included (default 120)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
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
                          continuous_batching=args.continuous_batching)
    app = create_app(models, config, aliases=aliases)
    print(f"decodelab: serving {', '.join(models)} on http://{args.host}:{args.port} (viewer at /)", file=sys.stderr)
    serve(app, args.host, args.port, log_level=args.log_level)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m decodelab.server`: the same as `decodelab serve`."""
    parser = argparse.ArgumentParser(prog="python -m decodelab.server")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_serve_command(args)
    except DecodelabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
