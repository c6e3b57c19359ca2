"""FIM table: token-level vs byte-level fill-in-the-middle on stdlib functions split at random
character positions (decodelab.bytes.bench). Usage:

    flock /tmp/qwen.lock python scripts/fim_table.py --model qwen2.5-coder-0.5b --n 40 --out fim.jsonl
"""

import argparse
import json
from pathlib import Path

import decodelab as dl
from decodelab.bytes.bench import fim_table, infilling_set
from decodelab.sampling.options import bounded_number

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="qwen2.5-coder-0.5b")
parser.add_argument("--weights", default="int4")
parser.add_argument("--n", type=bounded_number(int, 1, 1000, "--n"), default=40)
parser.add_argument("--seed", type=bounded_number(int, 0, 2**63 - 1, "--seed"), default=0)
parser.add_argument("--out", type=Path, default=Path("fim.jsonl"))
args = parser.parse_args()
lm = dl.load(args.model, weights=args.weights)
args.out.unlink(missing_ok=True)
summary = fim_table(lm, infilling_set(args.n, seed=args.seed), out=args.out, progress=False)
print(json.dumps({"model": args.model, "weights": args.weights, **summary}, indent=1))
