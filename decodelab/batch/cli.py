"""`decodelab batch generate|score|detect|bench --input in.jsonl --output out.jsonl`.

Each subcommand takes the options of its single-request command, derived from the same
definitions (`decodelab generate`'s flags for generate, `decodelab watermark detect`'s for
detect, `decodelab bench`'s method names for bench), plus the job's: `--workers N` local
workers or `--ray local|ADDRESS`, `--retry-errors`, `--overwrite`.

Example:
    decodelab batch generate --input prompts.jsonl --output out.jsonl --max-new-tokens 64 --temperature 0.7 --workers 2
    decodelab batch detect --input texts.jsonl --output p.jsonl --key my-key --scheme exp --ray local
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..decoding.generate import MAX_NEW_TOKENS
from ..errors import DecodelabError
from ..sampling.options import bounded_number
from ..text import print_error
from .job import MAX_WORKERS

INPUT_FORMAT = {
    "generate": '{"id": ..., "prompt": text | chat messages | token ids, "options": {...}}',
    "score": '{"id": ..., "prompt": ..., "completion": text | token ids}',
    "detect": '{"id": ..., "text": text} or {"id": ..., "token_ids": [...]}',
    "bench": '{"id": ..., "prompt": text | chat messages}',
}


def add_batch_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `batch` and its four subcommands to an argparse subparsers object."""
    from ..cli import add_generation_flags
    from ..watermark.cli import add_detect_flags

    parser = subparsers.add_parser("batch", help="run generate/score/detect/bench over a JSONL file (resumable; "
                                                 "local workers or Ray)")
    sub = parser.add_subparsers(dest="batch_command", required=True)
    helps = {"generate": "generate for each row", "score": "per-token log-probabilities of each row's completion",
             "detect": "watermark p-value of each row's text", "bench": "bench methods on each row's prompt"}
    commands = {name: sub.add_parser(name, help=helps[name], description=f"{helps[name]}; rows: {INPUT_FORMAT[name]}; "
                                     "one JSON line out per row in, in input order")
                for name in INPUT_FORMAT}
    for name, p in commands.items():
        _add_job_flags(p)
        if name == "generate":
            add_generation_flags(p)
            seed = next(a for a in p._actions if a.dest == "seed")
            seed.help = "job seed: row r samples with seed hash(seed, r's id) (default 0)"
            p.add_argument("--records", action="store_true", help="keep per-token records in each output line")
        else:
            _add_model_flags(p)
    for name in ("generate", "score"):
        commands[name].add_argument("--no-chat", action="store_true", help="do not apply the chat template")
    commands["score"].add_argument("--scores", default=None,
                                   help="comma-separated score columns (see `decodelab score`; default: all)")
    add_detect_flags(commands["detect"])
    bench = commands["bench"]
    bench.add_argument("--methods", default="plain", help="comma-separated bench methods (see `decodelab bench`)")
    bench.add_argument("--draft", default=None, help="draft model for draft-model methods")
    bench.add_argument("--max-new-tokens", type=bounded_number(int, 1, MAX_NEW_TOKENS, "--max-new-tokens"), default=64, help="new tokens per prompt")
    bench.add_argument("--temperature", type=bounded_number(float, 0.0, 100.0, "--temperature"), default=0.0, help="0 is greedy")
    bench.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE",
                       help="option given to every method that is not built in (repeatable)")
    return parser


def _add_job_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="JSONL file, one row (a JSON object) per line")
    parser.add_argument("--output", required=True, help="JSONL file of records; rows already in it are skipped")
    parser.add_argument("--workers", type=bounded_number(int, 1, MAX_WORKERS, "--workers"), default=1, help="local worker processes, or Ray actors with --ray "
                                                              "(one model each; default 1: in this process)")
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help='run on Ray: "local" (a Ray instance on this machine) or a cluster address')
    parser.add_argument("--retry-errors", action="store_true", help="run rows whose record is an error again")
    parser.add_argument("--overwrite", action="store_true", help="discard the output and start afresh")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    """The model flags of `decodelab generate` (there they come with the generation flags)."""
    parser.add_argument("--model", default=None, help="model pack name, HF folder or .gguf file (default: packaged SmolLM2)")
    parser.add_argument("--threads", type=bounded_number(int, 1, 1024, "--threads"), default=None, help="torch threads per worker")
    parser.add_argument("--weights", default="auto", help="weight precision: auto, int4, int8, bf16, fp32")
    parser.add_argument("--seed", type=bounded_number(int, 0, 2**63 - 1, "--seed"), default=0, help="job seed: row r uses seed hash(seed, r's id) (default 0)")


def job_spec(args: argparse.Namespace) -> Any:
    """The `JobSpec` of parsed `decodelab batch ...` flags."""
    from ..bench.methods import parse_method_options
    from .tasks import JobSpec

    task = args.batch_command
    options: dict[str, Any] = {}
    seed = args.seed
    if task == "generate":
        from ..cli import generation_options

        options = generation_options(args)
        seed = options.pop("seed", None) or 0
        if args.records:
            options["records"] = True
    elif task == "score":
        from ..uncertainty.method import parse_score_names

        if args.scores is not None:
            options["scores"] = list(parse_score_names(args.scores))
    elif task == "detect":
        from ..watermark.cli import detect_options

        options = detect_options(args)
    elif task == "bench":
        options = {"methods": [m.strip() for m in args.methods.split(",") if m.strip()], "draft": args.draft,
                   "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
                   "method_options": parse_method_options(args.method_option)}
    if getattr(args, "no_chat", False):
        options["chat"] = False
    return JobSpec(task, model=args.model, weights=args.weights, options=options, seed=seed, threads=args.threads)


def run_batch_command(args: argparse.Namespace) -> int:
    """Run `decodelab batch ...`; prints the summary to stderr. Exit code 0 also when rows failed
    (their error records say why); 2 on bad job options."""
    from .job import run_job

    try:
        summary = run_job(job_spec(args), args.input, args.output, workers=args.workers, ray=args.ray,
                          retry_errors=args.retry_errors, overwrite=args.overwrite, progress=not args.no_progress)
    except DecodelabError as exc:
        print_error(exc)
        return exc.exit_code
    for line in summary.lines():
        print(line, file=sys.stderr)
    return 0
