"""Watermark benchmarks: EXP-edit power under random substitution, false positive rate, detection speed.

    python -m decodelab.watermark.bench power --texts 40 --tokens 40
    python -m decodelab.watermark.bench fpr --texts 500 --tokens 40
    python -m decodelab.watermark.bench speed --texts 200 --tokens 256 --resamples 1000 --naive-texts 1

Power: SmolLM2 generates watermarked texts (EXP, n=256, temperature 1, random shift); a fraction
of tokens is replaced by uniformly random tokens; detection rate at p <= 0.01 (EXP-edit, gamma 0,
T resamples). FPR: random token sequences (independent of the key) at alpha = 0.01.
Speed: the fast detector against the naive pure-Python implementation of the same statistic; the
naive one is timed on a subset and extrapolated linearly (stated in the output).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from . import align
from .detect import detect, key_tables

PROMPTS = [
    "Write a short story about a lighthouse keeper.", "Explain how rain forms.", "Describe a busy market.",
    "Give advice to a new gardener.", "Tell me about the history of bread.", "Describe the ocean at night.",
    "Write a letter to a friend about a trip.", "Explain why the sky is blue.", "Describe a mountain village.",
    "Write about a cat that learns to read.",
]


def _substitute(tokens: list[int], rate: float, vocab: int, rng: np.random.Generator) -> list[int]:
    out = list(tokens)
    for i in rng.choice(len(out), int(round(rate * len(out))), replace=False):
        out[i] = int(rng.integers(0, vocab))
    return out


def power(texts: int, tokens: int, rates: list[float], resamples: int, seed: int = 0) -> list[dict]:
    import decodelab as dl

    from .schemes import generate

    lm = dl.load()
    rng = np.random.default_rng(seed)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(texts)]
    outs = generate(lm, prompts, key="bench-key", scheme="exp", max_new_tokens=tokens, seed=seed, records=False,
                    logit_bias={t: -100.0 for t in lm.eos_token_ids})
    base = [o.token_ids for o in outs]
    rows = []
    for rate in rates:
        attacked = [_substitute(t, rate, lm.vocab_size, rng) for t in base]
        start = time.perf_counter()
        results = detect(lm, attacked, key="bench-key", scheme="exp", resamples=resamples)
        rows.append({"substitution": rate, "detected_at_0.01": float(np.mean([r.p_value <= 0.01 for r in results])),
                     "median_p": float(np.median([r.p_value for r in results])), "texts": texts,
                     "tokens": tokens, "seconds": time.perf_counter() - start})
    return rows


def fpr(texts: int, tokens: int, resamples: int, stop_after: int | None, seed: int = 0, vocab: int = 49152) -> dict:
    rng = np.random.default_rng(seed)
    token_lists = [rng.integers(0, vocab, tokens) for _ in range(texts)]
    start = time.perf_counter()
    results = detect(None, token_lists, key="bench-key", scheme="exp", vocab_size=vocab, resamples=resamples,
                     stop_after=stop_after, seed=seed + 1)
    p = np.array([r.p_value for r in results])
    return {"texts": texts, "tokens": tokens, "fpr_at_0.01": float(np.mean(p <= 0.01)),
            "fpr_at_0.05": float(np.mean(p <= 0.05)), "seconds": time.perf_counter() - start}


def speed(texts: int, tokens: int, resamples: int, naive_texts: int, naive_resamples: int, stop_after: int | None,
          watermarked: bool, seed: int = 0, vocab: int = 49152, n: int = 256) -> dict:
    rng = np.random.default_rng(seed)
    token_lists = [rng.integers(0, vocab, tokens) for _ in range(texts)]
    if watermarked:  # synthetic watermark: plant the key's argmax token at every other aligned position
        from .keys import exp_key_sequence

        xi = exp_key_sequence("bench-key", n, vocab)
        for t in token_lists:
            for i in range(0, tokens, 2):
                t[i] = int(np.argmax(xi[i % n, :2000]))
    tables = key_tables("exp", "bench-key", n, vocab, token_lists)
    start = time.perf_counter()
    _, pvalues, used = align.fast_test(token_lists, mode=align.EXP, edit=True, key_tables=tables, vocab_size=vocab,
                                       n=n, k=None, gamma=0.0, resamples=resamples, stop_after=stop_after, seed=1)
    fast = time.perf_counter() - start
    start = time.perf_counter()
    for t, table in zip(token_lists[:naive_texts], tables[:naive_texts]):
        align.naive_test(list(t), mode=align.EXP, edit=True, key_table=table, vocab_size=vocab, n=n, k=None,
                         gamma=0.0, resamples=naive_resamples, seed=1)
    naive = time.perf_counter() - start
    naive_full = naive / (naive_texts * (naive_resamples + 1)) * texts * (resamples + 1)
    return {"texts": texts, "tokens": tokens, "n": n, "resamples": resamples, "stop_after": stop_after,
            "watermarked": watermarked, "fast_seconds": fast, "mean_resamples_used": float(used.mean()),
            "median_p": float(np.median(pvalues)),
            "naive_measured": f"{naive_texts} text(s) x {naive_resamples + 1} statistics in {naive:.1f} s",
            "naive_extrapolated_seconds": naive_full, "speedup": naive_full / fast}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m decodelab.watermark.bench")
    parser.add_argument("what", choices=["power", "fpr", "speed"])
    parser.add_argument("--texts", type=int, default=40)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--stop-after", type=int, default=None)
    parser.add_argument("--rates", default="0,0.1,0.2,0.3,0.4,0.5")
    parser.add_argument("--naive-texts", type=int, default=1)
    parser.add_argument("--naive-resamples", type=int, default=0)
    parser.add_argument("--watermarked", action="store_true")
    args = parser.parse_args(argv)
    if args.what == "power":
        result = power(args.texts, args.tokens, [float(r) for r in args.rates.split(",")], args.resamples)
    elif args.what == "fpr":
        result = fpr(args.texts, args.tokens, args.resamples, args.stop_after)
    else:
        result = speed(args.texts, args.tokens, args.resamples, args.naive_texts, args.naive_resamples,
                       args.stop_after, args.watermarked)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
