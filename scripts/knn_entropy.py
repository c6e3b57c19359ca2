"""The entropy effect of kNN-LM on open-ended generation (Wang et al. 2023, "kNN-LMs do not improve
open-ended generation"): mean next-token entropy of the model alone (p_lm) and of the interpolated
distribution (p) over the steps of greedy generations, for several interpolation weights `lam`.

Usage:
    decodelab knn build smol-suite --suite specbench_mini        # the datastore (SmolLM2 hidden states)
    PYTHONPATH=. python scripts/knn_entropy.py --datastore smol-suite --suite quick --lams 0.1,0.25,0.5

The prompts come from another suite than the datastore's text (held out), one generation per
prompt and weight; `out.results["knn-lm"]` carries both means (decodelab/strategies/knn.py).
"""

from __future__ import annotations

import argparse
import sys

from rich.progress import track


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datastore", required=True)
    parser.add_argument("--suite", default="quick")
    parser.add_argument("--lams", default="0.1,0.25,0.5")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    import decodelab as dl
    from decodelab.bench.suite import load_suite

    lm = dl.load()
    prompts = [p.messages for p in load_suite(args.suite).prompts]
    print(f"{len(prompts)} prompts of suite {args.suite!r}, greedy, {args.max_new_tokens} new tokens")
    print("| lam | mean entropy p_lm (nats) | mean entropy p (nats) | change |\n|---:|---:|---:|---:|")
    for lam in [float(x) for x in args.lams.split(",")]:
        pairs = []
        for messages in track(prompts, description=f"lam={lam}", transient=True):
            out = dl.generate(lm, messages, max_new_tokens=args.max_new_tokens, temperature=0, records=False,
                              strategy="knn-lm", strategy_options={"datastore": args.datastore, "lam": lam})
            r = out.results["knn-lm"]
            pairs.append((r["mean_entropy_lm"], r["mean_entropy_knn_lm"]))
        lm_h = sum(a for a, _ in pairs) / len(pairs)
        knn_h = sum(b for _, b in pairs) / len(pairs)
        print(f"| {lam} | {lm_h:.3f} | {knn_h:.3f} | {knn_h - lm_h:+.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
