"""`decodelab knn build`: the strategies family's command line (datastores for kNN-LM).

Wired into decodelab/cli.py with `_add_optional(..., "add_knn_parser", "run_knn_command")`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import InvalidOption


def add_knn_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("knn", help="kNN-LM datastores")
    sub = parser.add_subparsers(dest="knn_command", required=True)
    build = sub.add_parser("build", help="store the model's hidden states of a corpus with their next tokens")
    build.add_argument("out", help="a name (kept under the decodelab cache, what the server may use) or a folder")
    build.add_argument("--model", default=None, help="model name or path (default: the packaged model)")
    build.add_argument("--weights", default="auto", help="weight precision: auto, int4, int8, bf16, fp32")
    build.add_argument("--suite", action="append", default=None, help="a packaged prompt suite (repeatable)")
    build.add_argument("--text", action="append", default=None, help="a UTF-8 text file (repeatable)")
    return parser


def run_knn_command(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from ..corpus import suite_texts
    from ..models import load
    from .knn import Datastore, knn_dir

    texts = []
    for name in args.suite or ([] if args.text else ["specbench_mini"]):
        texts += suite_texts(name)
    for path in args.text or []:
        try:
            texts.append(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidOption(f"cannot read {path}: {exc}") from None
    lm = load(args.model, weights=args.weights)
    out = knn_dir() / args.out if "/" not in args.out else Path(args.out)
    with Progress(transient=True) as bar:
        task = bar.add_task("knn build", total=len(texts))
        store = Datastore.build(lm, texts, progress=lambda: bar.advance(task))
    store.save(out)
    print(json.dumps({"datastore": str(out), **store.meta}))
    return 0
