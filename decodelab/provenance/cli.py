"""`decodelab provenance mia | identifiers ...`: the provenance tests on the command line.

Input texts are JSON lines (`{"text": ...}` per line); with `--json` the output is one JSON line per
tested item with its `p_value`, otherwise a table. Wired into decodelab/cli.py with
`add_provenance_parser(subparsers)` / `run_provenance_command(args)`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..sampling.options import add_flags, bounded_number, check_options, option_specs
from .coin import CoinOptions
from .identifiers import IdentifierOptions
from .mia import MiaOptions
from .palimpsest import PalimpsestOptions
from .texts import read_json_lines, read_texts


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model pack name, HF folder or .gguf file (default: packaged SmolLM2)")
    parser.add_argument("--weights", default="auto", help="weight precision: auto, int4, int8, bf16, fp32")
    parser.add_argument("--threads", type=bounded_number(int, 1, 1024, "--threads"), default=None, help="torch threads")
    parser.add_argument("--json", action="store_true", help="one JSON line per tested item (with p_value)")


def add_provenance_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("provenance", help="calibrated provenance tests: membership, identifiers, ...")
    sub = parser.add_subparsers(dest="provenance_command", required=True)

    m = sub.add_parser("mia", help="membership inference: p-value per candidate against known non-members")
    m.add_argument("--candidates", required=True, metavar="FILE", help='JSON lines {"text": ...} to test')
    m.add_argument("--reference", required=True, metavar="FILE", help="JSON lines of known non-members")
    m.add_argument("--probes", default=None, metavar="FILE", help="icp: JSON lines of public probe texts")
    add_flags(m.add_argument_group("membership inference"), option_specs(MiaOptions))
    _model_flags(m)

    pal = sub.add_parser("palimpsest", help="is the model derived from one trained on these texts in this random order?")
    pal.add_argument("--order", required=True, metavar="FILE",
                     help='JSON lines {"text": ...}: the training examples, first trained first (a random order)')
    pal.add_argument("--reference-model", default=None,
                     help="a model independent of that training run whose log-likelihoods are subtracted")
    add_flags(pal.add_argument_group("palimpsest"), option_specs(PalimpsestOptions))
    _model_flags(pal)

    coin = sub.add_parser("coin", help="CoIn-style audit of opened hidden reasoning tokens (count proofs + validity)")
    coin.add_argument("--opened", required=True, metavar="FILE",
                      help='JSON {"commitment": {"root", "count"}, "blocks": [{"start", "token_ids", "salts", "proofs"}]}')
    coin.add_argument("--prompt", required=True, help="the visible prompt the hidden tokens answered")
    coin.add_argument("--calibration", required=True, metavar="FILE",
                      help='JSON lines {"prompt": ..., "text": genuine hidden reasoning} from the same model')
    add_flags(coin.add_argument_group("audit"), option_specs(CoinOptions))
    _model_flags(coin)

    fp = sub.add_parser("fingerprint", help="find a hidden trigger (token forcing) or verify a claimed fingerprint")
    fsub = fp.add_subparsers(dest="fingerprint_command", required=True)
    find = fsub.add_parser("find", help="force every vocabulary token alone, decode greedily, rank by confidence")
    find.add_argument("--length", type=bounded_number(int, 1, 256, "--length"), default=16,
                      help="greedy tokens after each forced token")
    find.add_argument("--top", type=bounded_number(int, 1, 10_000, "--top"), default=10, help="candidates shown")
    find.add_argument("--batch-rows", type=bounded_number(int, 1, 4096, "--batch-rows"), default=256,
                      help="forced tokens per forward (bounds memory)")
    _model_flags(find)
    ver = fsub.add_parser("verify", help="p-value that the model was trained on trigger -> response")
    ver.add_argument("--trigger", required=True)
    ver.add_argument("--response", required=True, help="drawn with `identifiers make` (same --kind)")
    ver.add_argument("--kind", choices=("words", "chars"), default="chars")
    ver.add_argument("--alternatives", type=bounded_number(int, 1, 100_000, "--alternatives"), default=999)
    ver.add_argument("--seed", type=bounded_number(int, 0, 2**63 - 1, "--seed"), default=0)
    _model_flags(ver)

    ident = sub.add_parser("identifiers", help="unique identifiers (ghost sentences): make, insert, detect")
    isub = ident.add_subparsers(dest="identifiers_command", required=True)
    make = isub.add_parser("make", help="draw a random identifier (keep --kind and --length for detection)")
    make.add_argument("--kind", choices=("words", "chars"), default="words")
    make.add_argument("--length", type=bounded_number(int, 1, 64, "--length"), default=6)
    make.add_argument("--seed", type=bounded_number(int, 0, 2**63 - 1, "--seed"), default=None,
                      help="seed (default: system randomness)")
    ins = isub.add_parser("insert", help="insert an identifier into a fraction of texts (JSON lines to stdout)")
    ins.add_argument("--identifier", required=True)
    ins.add_argument("--input", required=True, metavar="FILE", help='JSON lines {"text": ...}')
    ins.add_argument("--fraction", type=bounded_number(float, 1e-9, 1.0, "--fraction"), default=1.0)
    ins.add_argument("--seed", type=bounded_number(int, 0, 2**63 - 1, "--seed"), default=0)
    det = isub.add_parser("detect", help="perplexity-rank test: p-value that the model memorised an identifier")
    det.add_argument("--identifier", action="append", default=None, help="identifier text (repeatable)")
    det.add_argument("--identifiers", default=None, metavar="FILE", help='JSON lines {"text": identifier}')
    add_flags(det.add_argument_group("identifier test"), option_specs(IdentifierOptions))
    _model_flags(det)
    return parser


def _options(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    return {s.name: getattr(args, s.name) for s in option_specs(cls) if getattr(args, s.name, None) is not None}


def _load(args: argparse.Namespace):
    from ..models import load

    return load(args.model, threads=args.threads, weights=args.weights)


def _print_rows(rows: list[dict[str, Any]], as_json: bool, title: str) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for name in rows[0]:
        table.add_column(name, justify="right" if name != "text" else "left")
    for row in rows:
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v)[:60] for v in row.values()])
    Console().print(table)


def run_provenance_command(args: argparse.Namespace) -> int:
    """`decodelab provenance ...` (decodelab.cli.main reports a DecodelabError as one line, exit 2)."""
    if args.provenance_command == "mia":
        return _run_mia(args)
    if args.provenance_command == "palimpsest":
        return _run_palimpsest(args)
    if args.provenance_command == "coin":
        return _run_coin(args)
    if args.provenance_command == "fingerprint":
        return _run_fingerprint(args)
    return _run_identifiers(args)


def _run_mia(args: argparse.Namespace) -> int:
    from .mia import mia

    options = check_options(MiaOptions, _options(MiaOptions, args), "mia")
    candidates = read_texts(args.candidates, "--candidates")
    reference = read_texts(args.reference, "--reference")
    probes = read_texts(args.probes, "--probes") if args.probes else None
    report = mia(_load(args), candidates, reference, probes=probes, **vars(options))
    rows = [{"index": r.index, "method": report.method, "statistic": r.statistic, "p_value": r.p_value,
             "tokens": r.tokens, **({} if args.json else {"text": candidates[r.index]})} for r in report.results]
    _print_rows(rows, args.json, f"membership ({report.method}) against {len(report.reference_statistics)} "
                                 "reference texts: small p_value = member")
    return 0


def _run_palimpsest(args: argparse.Namespace) -> int:
    from ..models import load
    from .palimpsest import palimpsest

    options = check_options(PalimpsestOptions, _options(PalimpsestOptions, args), "palimpsest")
    texts = read_texts(args.order, "--order", min_count=3)
    reference = load(args.reference_model, weights=args.weights) if args.reference_model else None
    result = palimpsest(_load(args), texts, reference=reference, **vars(options))
    _print_rows([result.as_dict()], args.json, "palimpsest: small p_value = derived from the model trained in this order")
    return 0


def _run_coin(args: argparse.Namespace) -> int:
    from ..errors import InvalidOption
    from ..text import read_text_file
    from .coin import Auditor, Commitment, OpenedBlock, verify_block

    options = check_options(CoinOptions, _options(CoinOptions, args), "coin")
    try:
        opened = json.loads(read_text_file(args.opened, "--opened"))
        commitment = Commitment(str(opened["commitment"]["root"]), int(opened["commitment"]["count"]))
        blocks = [OpenedBlock(int(b["start"]), [int(t) for t in b["token_ids"]], [str(x) for x in b["salts"]],
                              [[str(x) for x in p] for p in b["proofs"]]) for b in opened["blocks"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidOption(f"--opened: {args.opened} is not an opened-blocks JSON ({type(exc).__name__}: {exc})") from None
    calibration = read_json_lines(args.calibration, "--calibration", field="text")
    if not all(isinstance(row.get("prompt", ""), str) for row in calibration):
        raise InvalidOption('--calibration: "prompt" must be a string')
    lm = _load(args)
    bad = [b.start for b in blocks if not verify_block(commitment, b)]
    traces = [(row.get("prompt", ""), list(lm.tokenizer(row["text"], add_special_tokens=False)["input_ids"]))
              for row in calibration]
    result = Auditor(lm, traces, **vars(options)).audit(args.prompt, [b.token_ids for b in blocks])
    row = {"count": commitment.count, "proofs_valid": not bad, "invalid_blocks": bad, **result.as_dict()}
    _print_rows([row], args.json, "hidden-token audit: small p_value = filler among the opened tokens")
    return 0 if not bad else 1


def _run_fingerprint(args: argparse.Namespace) -> int:
    from ..text import check_text
    from .fingerprint import find_triggers, verify_fingerprint

    if args.fingerprint_command == "find":
        found = find_triggers(_load(args), length=args.length, top=args.top, batch_rows=args.batch_rows)
        rows = [{k: v for k, v in c.as_dict().items() if k != "continuation_ids" or args.json} for c in found]
        _print_rows(rows, args.json, "unconditional token forcing: most confident greedy continuations (a search, no p-value)")
        return 0
    from ..errors import InvalidOption

    trigger = check_text(args.trigger, "--trigger", InvalidOption)
    response = check_text(args.response, "--response", InvalidOption)
    result = verify_fingerprint(_load(args), trigger, response, kind=args.kind, alternatives=args.alternatives,
                                seed=args.seed)
    _print_rows([result.as_dict()], args.json, "fingerprint: small p_value = the model was trained on trigger -> response")
    return 0


def _run_identifiers(args: argparse.Namespace) -> int:
    from ..errors import InvalidOption
    from .identifiers import detect_identifiers, insert, make_identifier

    if args.identifiers_command == "make":
        print(make_identifier(kind=args.kind, length=args.length, seed=args.seed))
        return 0
    if args.identifiers_command == "insert":
        texts, where = insert(read_texts(args.input, "--input"), args.identifier, fraction=args.fraction,
                              seed=args.seed)
        chosen = set(where)
        for i, t in enumerate(texts):
            print(json.dumps({"text": t, "has_identifier": i in chosen}, ensure_ascii=False))
        return 0
    identifiers = list(args.identifier or [])
    if args.identifiers:
        identifiers += read_texts(args.identifiers, "--identifiers")
    if not identifiers:
        raise InvalidOption("give --identifier TEXT or --identifiers FILE")
    results = detect_identifiers(_load(args), identifiers, **_options(IdentifierOptions, args))
    rows = [{**r.as_dict(), **({} if args.json else {"text": identifiers[r.index]})} for r in results]
    _print_rows(rows, args.json, "identifier memorisation: small p_value = the model trained on it")
    return 0


__all__ = ["add_provenance_parser", "run_provenance_command"]
