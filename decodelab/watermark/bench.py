"""Watermark benchmarks: EXP-edit power under random substitution, false positive rate, detection speed.

    python -m decodelab.watermark.bench power --texts 128 --tokens 35 --resamples 500
    python -m decodelab.watermark.bench fpr --texts 500 --tokens 40 [--real]
    python -m decodelab.watermark.bench speed --texts 200 --tokens 256 --resamples 1000 [--source smollm2
        --substitution 0.4] [--all-resamples --kernels shifts,lanes]

Power (the setting of Kuditipudi et al. 2023, Sec. 4): SmolLM2 continues news openings as raw text
(chat=False) with the EXP watermark (n=256, temperature 1, no top-k/top-p, random shift); int(rate*m)
tokens are replaced by uniformly random tokens; detection rate at p <= 0.01 with EXP-edit (gap cost 0,
block k = m, T resamples). FPR: text independent of the key (random tokens, or unwatermarked
SmolLM2 continuations) at alpha = 0.01 and 0.05.
Speed: the fast detector against the naive pure-Python implementation of the same statistic; the
naive one is timed on a subset and extrapolated linearly to the statistics the fast run needed
(observed + resamples used; stated in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib

import numpy as np

from . import align
from .detect import DEFAULT_STOP_AFTER, detect, key_tables
from .prompts import NEWS_OPENINGS


def _substitute(tokens: list[int], rate: float, vocab: int, rng: np.random.Generator) -> list[int]:
    """The paper's substitution attack: int(rate * m) distinct positions get uniformly random tokens."""
    out = list(tokens)
    for i in rng.choice(len(out), int(rate * len(out)), replace=False):
        out[i] = int(rng.integers(0, vocab))
    return out


def watermarked_news(lm, texts: int, tokens: int, key: str = "bench-key", seed: int = 0) -> list[list[int]]:
    """`texts` EXP-watermarked continuations (n=256, T=1, no top-k/top-p, EOS banned) of the news
    openings, as raw text (chat=False), cycling through the openings."""
    from .schemes import generate

    prompts = [NEWS_OPENINGS[i % len(NEWS_OPENINGS)] for i in range(texts)]
    outs = generate(lm, prompts, key=key, scheme="exp", max_new_tokens=tokens, seed=seed, records=False,
                    chat=False, temperature=1.0, logit_bias={t: -100.0 for t in lm.eos_token_ids})
    return [list(o.token_ids) for o in outs]


def power(texts: int, tokens: int, rates: list[float], resamples: int, seed: int = 0,
          key_check: bool = True) -> dict:
    """Detection rate at p <= 0.01 (and median p) under random substitution, EXP-edit (gap cost 0,
    k = m, n = 256), on SmolLM2 watermarked news continuations; plus the same texts under a
    wrong key (a false-positive control on real text)."""
    import decodelab as dl

    lm = dl.load()
    start = time.perf_counter()
    base = watermarked_news(lm, texts, tokens, seed=seed)
    generation = time.perf_counter() - start
    rng = np.random.default_rng(seed)
    rows = []
    for rate in rates:
        attacked = [_substitute(t, rate, lm.vocab_size, rng) for t in base]
        start = time.perf_counter()
        p = np.array([r.p_value for r in detect(lm, attacked, key="bench-key", scheme="exp", resamples=resamples,
                                                seed=seed + 1)])
        row = {"substitution": rate, "detected_at_0.01": float(np.mean(p <= 0.01)),
               "detected_at_0.05": float(np.mean(p <= 0.05)), "median_p": float(np.median(p)),
               "seconds": time.perf_counter() - start}
        if key_check:
            q = np.array([r.p_value for r in detect(lm, attacked, key="wrong-key", scheme="exp",
                                                    resamples=resamples, seed=seed + 2)])
            row["wrong_key_rejected_at_0.01"] = float(np.mean(q <= 0.01))
        rows.append(row)
    return {"model": "SmolLM2-135M-Instruct (packaged)", "texts": texts, "tokens": tokens, "n": 256,
            "resamples": resamples, "gap_cost": 0.0, "block": "k = m", "prompts": "NEWS_OPENINGS, chat=False, T=1",
            "generation_seconds": generation, "rows": rows}


def fpr(texts: int, tokens: int, resamples: int, stop_after: int | None, seed: int = 0, vocab: int = 49152,
        real: bool = False, key_per_text: bool = False) -> dict:
    """False positive rate of EXP-edit on text independent of the key: random token sequences, or
    (real=True) unwatermarked SmolLM2 continuations of the news openings (T=1, chat=False).

    With one key for all texts the p-values are each uniform but dependent (natural texts share
    tokens, hence key values), so their rejection rate scatters more than a binomial; with
    key_per_text they are independent (the paper also draws one key per text)."""
    if real:
        import decodelab as dl

        lm = dl.load()
        vocab = lm.vocab_size
        token_lists = []
        for first in range(0, texts, 100):  # batches of 100 rows keep memory small
            prompts = [NEWS_OPENINGS[i % len(NEWS_OPENINGS)] for i in range(first, min(texts, first + 100))]
            outs = dl.generate(lm, prompts, max_new_tokens=tokens, seed=seed + first, records=False, chat=False,
                               temperature=1.0, logit_bias={t: -100.0 for t in lm.eos_token_ids})
            token_lists += [np.asarray(o.token_ids) for o in outs]
    else:
        rng = np.random.default_rng(seed)
        token_lists = [rng.integers(0, vocab, tokens) for _ in range(texts)]
    start = time.perf_counter()
    if key_per_text:  # independent p-values: texts that share a key share its values at common tokens
        p = np.array([detect(None, [t], key=f"fpr-key-{i}", scheme="exp", vocab_size=vocab, resamples=resamples,
                             stop_after=stop_after, seed=seed + 1 + i)[0].p_value for i, t in enumerate(token_lists)])
    else:
        p = np.array([r.p_value for r in detect(None, token_lists, key="bench-key", scheme="exp", vocab_size=vocab,
                                                resamples=resamples, stop_after=stop_after, seed=seed + 1)])
    return {"texts": texts, "tokens": tokens, "source": "SmolLM2 news continuations" if real else "random tokens",
            "keys": "one per text" if key_per_text else "one for all texts",
            "resamples": resamples, "stop_after": stop_after, "fpr_at_0.01": float(np.mean(p <= 0.01)),
            "fpr_at_0.05": float(np.mean(p <= 0.05)), "fpr_at_0.2": float(np.mean(p <= 0.2)),
            "seconds": time.perf_counter() - start}


def kernel_throughput(tokens: int = 256, n: int = 256, vocab: int = 49152) -> dict:
    """Single-thread cells/s of the exact alignment kernel (one full statistic: n shifts x k x k cells)
    and of the naive pure-Python DP on a smaller case, so a benchmark on a busy machine can be checked."""
    rng = np.random.default_rng(0)
    tokens_ = rng.integers(0, vocab, tokens)
    uniq, inv = np.unique(tokens_, return_inverse=True)
    table = rng.random((n, len(uniq)))
    rows = np.empty((len(uniq), n + tokens + align._LANES), np.int32)
    align._key_rows(align.EXP, table, np.zeros(1), np.zeros(1), n, rows, np.empty(n), np.empty(n, np.int64))
    inv = inv.astype(np.int64)
    align._statistic(rows, inv, tokens, tokens, n, 0, True)  # compile / warm up
    start = time.process_time()
    align._statistic(rows, inv, tokens, tokens, n, 0, True)
    fast = time.process_time() - start
    cost = align._naive_costs(align.EXP, [int(t) for t in tokens_[:64]], sorted(set(int(t) for t in tokens_[:64])),
                              rng.random((64, 64)).tolist(), None, None, 64)
    start = time.process_time()
    align.naive_statistic(cost, 64, 64, 0, True)
    naive = time.process_time() - start
    return {"kernel_cells_per_s": n * tokens * tokens / fast, "naive_cells_per_s": 64 ** 3 / naive}


def _simulate_exp(token_lists: list[np.ndarray], xi: np.ndarray, rng: np.random.Generator, support: int = 200,
                  zipf: float = 1.5) -> None:
    """EXP-watermark sampling (token = argmax_v xi_v ** (1 / p_v), key row (shift + i) mod n, random shift)
    from a stand-in language model: at every position p is Zipf(zipf) over `support` random tokens
    (entropy 2.7 nats for the defaults; SmolLM2 on news openings is mostly between 1 and 5)."""
    weights = 1.0 / np.arange(1, support + 1) ** zipf
    weights /= weights.sum()
    n, vocab = xi.shape
    for t in token_lists:
        rows = (int(rng.integers(0, n)) + np.arange(len(t))) % n
        candidates = rng.integers(0, vocab, (len(t), support))  # rare repeats only merge two candidates
        scores = np.log(xi[rows[:, None], candidates]) / weights
        t[:] = candidates[np.arange(len(t)), np.argmax(scores, axis=1)]


def speed_texts(source: str, texts: int, tokens: int, substitution: float = 0.0, seed: int = 0, vocab: int = 49152,
                n: int = 256, cache: str | None = None) -> tuple[list[np.ndarray], int]:
    """Token lists for the speed run and their vocabulary size: "random" (unwatermarked), "planted" (the
    key's argmax token at every other aligned position: a strong synthetic watermark), "simulated" (EXP
    sampling from a Zipf stand-in language model, `_simulate_exp`) or "smollm2"
    (EXP-watermarked SmolLM2 news continuations, as in `power`; kept in `cache` if given); then
    int(substitution * m) random substitutions per text."""
    rng = np.random.default_rng(seed)
    if source == "smollm2":
        if cache and os.path.exists(cache):
            with open(cache) as handle:
                token_lists = [np.asarray(t) for t in json.load(handle)]
        else:
            import decodelab as dl

            token_lists = [np.asarray(t) for t in watermarked_news(dl.load(), texts, tokens, seed=seed)]
            if cache:
                with open(cache, "w") as handle:
                    json.dump([t.tolist() for t in token_lists], handle)
    else:
        token_lists = [rng.integers(0, vocab, tokens) for _ in range(texts)]
        if source in ("planted", "simulated"):
            from .keys import exp_key_sequence

            xi = exp_key_sequence("bench-key", n, vocab)
        if source == "planted":
            for t in token_lists:
                for i in range(0, tokens, 2):
                    t[i] = int(np.argmax(xi[i % n, :2000]))
        elif source == "simulated":
            _simulate_exp(token_lists, xi, rng)
    if substitution:
        token_lists = [np.asarray(_substitute(list(t), substitution, vocab, rng)) for t in token_lists]
    return token_lists, vocab


def speed(texts: int, tokens: int, resamples: int, naive_texts: int, naive_resamples: int, stop_after: int | None,
          source: str = "random", substitution: float = 0.0, kernels: tuple[str, ...] = ("auto",), seed: int = 0,
          n: int = 256, workers: int | None = None, cache: str | None = None) -> dict:
    """Time `detect` (EXP-edit, gap cost 0, block = whole text) on `texts` texts with each null-test kernel
    in turn, same inputs, same process; the naive oracle is timed on a subset and extrapolated."""
    token_lists, vocab = speed_texts(source, texts, tokens, substitution, seed, n=n, cache=cache)
    detect(None, token_lists[:1], key="bench-key", vocab_size=vocab, resamples=2, progress=False)  # load kernels
    runs = {}
    for kernel in kernels:
        load_before = os.getloadavg()
        cpu_start = time.process_time()
        start = time.perf_counter()
        if kernel == "auto":  # the public path with its defaults
            results = detect(None, token_lists, key="bench-key", vocab_size=vocab, n=n, resamples=resamples,
                             stop_after=stop_after, seed=1, workers=workers)
            pvalues = np.array([r.p_value for r in results])
            used = np.array([r.resamples for r in results])
        else:
            tables = key_tables("exp", "bench-key", n, vocab, token_lists)
            _, pvalues, used, _ = align.fast_test(token_lists, mode=align.EXP, edit=True, key_tables=tables,
                                                  vocab_size=vocab, n=n, k=None, gap_cost=0.0, resamples=resamples,
                                                  stop_after=stop_after, seed=1, workers=workers, kernel=kernel)
        runs[kernel] = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
                        "mean_resamples_used": float(np.mean(used)), "median_p": float(np.median(pvalues)),
                        "detected_at_0.01": float(np.mean(pvalues <= 0.01)),
                        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
                        "p_values_crc32": zlib.crc32(pvalues.tobytes())}
    first = runs[kernels[0]]
    start = time.perf_counter()
    tables = key_tables("exp", "bench-key", n, vocab, token_lists[:naive_texts])
    for t, table in zip(token_lists[:naive_texts], tables):
        align.naive_test(list(t), mode=align.EXP, edit=True, key_table=table, vocab_size=vocab, n=n, k=None,
                         gap_cost=0.0, resamples=naive_resamples, seed=1)
    naive = time.perf_counter() - start
    # The naive detector would compute the same statistics: the observed one and every resample used.
    naive_full = naive / (naive_texts * (naive_resamples + 1)) * (first["mean_resamples_used"] + 1) * texts
    return {"texts": texts, "tokens": tokens, "n": n, "resamples": resamples, "stop_after": stop_after,
            "source": source, "substitution": substitution, "runs": runs,
            "same_p_values": len({r["p_values_crc32"] for r in runs.values()}) == 1,
            "naive_measured": f"{naive_texts} text(s) x {naive_resamples + 1} statistics in {naive:.1f} s",
            "naive_extrapolated_seconds": naive_full, "speedup": naive_full / first["seconds"],
            "threads": workers or align.get_num_threads(), **kernel_throughput(tokens, n, vocab)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m decodelab.watermark.bench")
    parser.add_argument("what", choices=["power", "fpr", "speed"])
    parser.add_argument("--texts", type=int, default=40)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--stop-after", type=int, default=DEFAULT_STOP_AFTER)
    parser.add_argument("--all-resamples", action="store_true", help="no early stopping")
    parser.add_argument("--rates", default="0,0.1,0.2,0.3,0.4,0.5")
    parser.add_argument("--naive-texts", type=int, default=1)
    parser.add_argument("--naive-resamples", type=int, default=0)
    parser.add_argument("--source", choices=["random", "planted", "simulated", "smollm2"], default="random",
                        help="speed: unwatermarked random tokens, a planted synthetic watermark, or SmolLM2 EXP text")
    parser.add_argument("--substitution", type=float, default=0.0, help="speed: random substitution rate")
    parser.add_argument("--kernels", default="auto", help="speed: null-test kernels to time in turn (auto,shifts,lanes)")
    parser.add_argument("--cache", default=None, help="speed --source smollm2: keep the generated texts here")
    parser.add_argument("--real", action="store_true", help="fpr: unwatermarked SmolLM2 text, not random tokens")
    parser.add_argument("--key-per-text", action="store_true", help="fpr: a fresh key for every text")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the JSON result to this file")
    args = parser.parse_args(argv)
    stop_after = None if args.all_resamples else args.stop_after
    if args.what == "power":
        result = power(args.texts, args.tokens, [float(r) for r in args.rates.split(",")], args.resamples,
                       seed=args.seed)
    elif args.what == "fpr":
        result = fpr(args.texts, args.tokens, args.resamples, stop_after, seed=args.seed, real=args.real,
                     key_per_text=args.key_per_text)
    else:
        result = speed(args.texts, args.tokens, args.resamples, args.naive_texts, args.naive_resamples, stop_after,
                       args.source, args.substitution, tuple(args.kernels.split(",")), workers=args.workers,
                       cache=args.cache)
    result["command"] = "python -m decodelab.watermark.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
