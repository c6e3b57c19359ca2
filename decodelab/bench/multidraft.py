"""Multi-draft acceptance on real model positions: chain vs RRS vs RSD vs SpecTr vs the optimum.

For prompts of a suite, the target samples a continuation; at every position of it the target's
and the draft's processed next-token distributions (p, q) are recorded (same sampler settings
for both, as in decoding). For each number of drafts n the expected acceptance per verify of
each multi-draft verifier is computed in closed form on the same (p, q) pairs, beside the optimal
multi-draft acceptance (Hu et al. 2025, "Towards Optimal Multi-draft Speculative Decoding"); see
`decodelab.speculative.multidraft_math`.

    python -m decodelab.bench.multidraft --model qwen2.5-coder-1.5b --draft qwen2.5-coder-0.5b \\
        --per-category 2 --tokens 24 --n 2,3,4 --out docs/bench/multidraft
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ..errors import DecodelabError
from ..sampling.config import SamplingConfig, process_logits
from ..speculative.multidraft_math import acceptance_table, format_acceptance_table
from ..text import print_error
from .suite import load_suite


def position_pairs(target, draft, prompts: list, *, tokens: int, seed: int, **sampler) -> list[tuple]:
    """(p, q) at every generated position, restricted to the union of both supports."""
    from ..decoding.generate import generate
    from ..speculative.draft_model import check_same_vocabulary

    check_same_vocabulary(target, draft)
    config = SamplingConfig.from_options(target.generation_defaults(), **sampler)
    pairs = []
    for i, prompt in enumerate(prompts):
        out = generate(target, prompt, max_new_tokens=tokens, seed=seed + i, records=False, **sampler)
        ids = torch.tensor([out.prompt_token_ids + out.token_ids])
        start = len(out.prompt_token_ids) - 1
        with torch.inference_mode():
            p_logits = target.model(ids.to(target.device)).logits[0, start:-1].float()
            q_logits = draft.model(ids.to(draft.device)).logits[0, start:-1].float()
        p = process_logits(p_logits, config).softmax(-1).double()
        q = process_logits(q_logits, config).softmax(-1).double()
        for row in range(p.shape[0]):
            support = ((p[row] > 0) | (q[row] > 0)).nonzero().flatten()
            pairs.append((p[row, support], q[row, support]))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m decodelab.bench.multidraft", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="target model (default: packaged)")
    parser.add_argument("--draft", required=True, help="draft model with the target's tokenizer")
    parser.add_argument("--suite", default="specbench_mini")
    parser.add_argument("--per-category", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=24, help="generated positions per prompt")
    parser.add_argument("--n", default="2,3,4", help="numbers of drafts, comma-separated")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=50, help="keeps distributions small enough for exact tables")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for acceptance.json / acceptance.md")
    args = parser.parse_args(argv)
    try:
        from ..models import load

        n_values = [int(x) for x in args.n.split(",")]
        suite = load_suite(args.suite, per_category=args.per_category)
        prompts = [p.messages for p in suite.prompts]
        target, draft = load(args.model), load(args.draft)
        start = time.perf_counter()
        pairs = position_pairs(target, draft, prompts, tokens=args.tokens, seed=args.seed,
                               temperature=args.temperature, top_k=args.top_k)
        rows = acceptance_table(pairs, n_values)
        table = format_acceptance_table(rows)
    except (DecodelabError, ValueError) as exc:
        print_error(exc)
        return 2
    command = "python -m decodelab.bench.multidraft " + " ".join(argv if argv is not None else sys.argv[1:])
    print(table)
    print(f"\n{len(pairs)} positions from {len(prompts)} prompts in {time.perf_counter() - start:.0f} s")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"command": command, "target": target.name, "draft": draft.name, "positions": len(pairs),
                "temperature": args.temperature, "top_k": args.top_k}
        (out / "acceptance.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        (out / "acceptance.md").write_text(f"`{command}`\n\n{table}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
