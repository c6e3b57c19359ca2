"""Calibration (FPR on null sets, p-value histograms) and power (on sets where the answer is known by
construction) of the provenance tests, on models trained here on known data.

Usage:
    PYTHONPATH=. nice -n 19 python scripts/provenance_eval.py --part mia --seeds 5
    PYTHONPATH=. nice -n 19 python scripts/provenance_eval.py --part mia-smol      # fine-tunes SmolLM2-135M
    PYTHONPATH=. nice -n 19 python scripts/provenance_eval.py --part identifiers --seeds 3
    PYTHONPATH=. nice -n 19 python scripts/provenance_eval.py --part palimpsest --seeds 20
    PYTHONPATH=. nice -n 19 python scripts/provenance_eval.py --part coin
    PYTHONPATH=. nice -n 19 python scripts/provenance_eval.py --part fingerprint --seeds 3

Corpus: paragraphs of the Python standard library's docstrings (`decodelab.corpus.stdlib`), shuffled
per seed and split into members / reference / null candidates, so membership is known exactly.
Tiny models: the character-level `tiny-random` Llama (2 layers, width 64), trained on one thread.
Writes docs/bench/provenance/<part>.json and <part>_pvalues.png.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent.parent / "docs" / "bench" / "provenance"


def tiny_corpus(seed: int, n: int) -> list[str]:
    from decodelab.corpus.stdlib import docstring_paragraphs
    from decodelab.models.tiny import ALPHABET

    texts = docstring_paragraphs(None, min_chars=40, max_chars=100, alphabet="".join(ALPHABET))
    random.Random(seed).shuffle(texts)
    if len(texts) < n:
        sys.exit(f"only {len(texts)} paragraphs, {n} needed")
    return texts[:n]


def tiny_model(seed: int):
    import decodelab as dl

    return dl.load("tiny-random", vocab_size=80, seed=seed, hidden_size=64, num_layers=2, context_length=512)


def rates(p: list[float] | np.ndarray) -> dict[str, float]:
    """Rejection rates at 0.01 / 0.05 with their count and a 95% Wilson interval half-width."""
    p = np.asarray(p, dtype=float)
    out: dict[str, float] = {"n": int(p.size)}
    for a in (0.01, 0.05):
        r = float(np.mean(p <= a))
        out[f"at_{a}"] = r
        out[f"at_{a}_ci95"] = 1.96 * math.sqrt(max(r * (1 - r), a * (1 - a)) / max(p.size, 1))
    return out


def histogram(null: dict[str, list[float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(null), figsize=(3.2 * len(null), 2.8), squeeze=False)
    for ax, (name, p) in zip(axes[0], null.items()):
        ax.hist(p, bins=20, range=(0, 1), density=True, color="#4a7ab5", edgecolor="white")
        ax.axhline(1.0, color="black", lw=1, ls="--")
        ax.set_title(f"{name} (n={len(p)})", fontsize=9)
        ax.set_xlabel("p-value under the null")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(part: str, result: dict, null: dict[str, list[float]], title: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{part}.json").write_text(json.dumps(result, indent=2) + "\n")
    if null:
        histogram(null, OUT / f"{part}_pvalues.png", title)
    print(json.dumps(result, indent=2))


def part_mia(args) -> None:
    from scipy import stats

    import decodelab as dl

    torch.set_num_threads(1)
    methods = ("loss", "zlib", "mink", "icp")
    null = {m: [] for m in methods}
    member = {m: [] for m in methods}
    ks = {m: [] for m in methods}
    start = time.perf_counter()
    for seed in range(args.seeds):
        texts = tiny_corpus(seed, args.members + 2 * args.reference)
        members = texts[:args.members]
        reference = texts[args.members:args.members + args.reference]
        null_cands = texts[args.members + args.reference:]
        lm = tiny_model(seed)
        dl.provenance.train_on_texts(lm, members, epochs=args.epochs, batch_size=16, lr=3e-3, seed=seed)
        for m in methods:
            r0 = dl.provenance.mia(lm, null_cands, reference, method=m, seed=seed)
            r1 = dl.provenance.mia(lm, members, reference, method=m, seed=seed)
            null[m] += r0.p_values
            member[m] += r1.p_values
            ks[m].append(float(stats.ks_2samp([r.statistic for r in r0.results], r0.reference_statistics).pvalue))
        print(f"seed {seed} done, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    result = {"setup": {"model": "tiny-random char Llama (2 layers, width 64)", "members": args.members,
                        "reference": args.reference, "null_candidates": args.reference, "epochs": args.epochs,
                        "seeds": args.seeds, "seconds": round(time.perf_counter() - start, 1)},
              "methods": {m: {"null_fpr": rates(null[m]), "member_power": rates(member[m]),
                              "ks_two_sample_p_min": min(ks[m]), "ks_two_sample_p_median": float(np.median(ks[m]))}
                          for m in methods}}
    write("mia", result, null, "MIA p-values of non-member candidates (tiny model, known split)")


def part_mia_smol(args) -> None:
    from scipy import stats

    import decodelab as dl
    from decodelab.corpus.stdlib import docstring_paragraphs

    texts = docstring_paragraphs(None, min_chars=60, max_chars=240)
    random.Random(0).shuffle(texts)
    members = texts[:args.members]
    reference = texts[args.members:args.members + args.reference]
    null_cands = texts[args.members + args.reference:args.members + 2 * args.reference]
    lm = dl.load(args.model, weights="fp32", cache=False)
    print(f"loaded {args.model}", file=sys.stderr)
    start = time.perf_counter()
    losses = dl.provenance.train_on_texts(lm, members, epochs=args.epochs, batch_size=8, lr=args.lr, progress=True)
    train_s = time.perf_counter() - start
    print(f"trained: {len(losses)} steps in {train_s:.0f} s, loss {losses[0]:.3f} -> {losses[-1]:.3f}", file=sys.stderr)
    methods = ("loss", "zlib", "mink", "icp")
    null, out = {}, {}
    for m in methods:
        r0 = dl.provenance.mia(lm, null_cands, reference, method=m)
        r1 = dl.provenance.mia(lm, members, reference, method=m)
        null[m] = r0.p_values
        out[m] = {"null_fpr": rates(r0.p_values), "member_power": rates(r1.p_values),
                  "ks_two_sample_p": float(stats.ks_2samp([r.statistic for r in r0.results],
                                                          r0.reference_statistics).pvalue)}
        print(m, out[m], file=sys.stderr)
    result = {"setup": {"model": f"{args.model} fine-tuned here (fp32)", "members": args.members,
                        "reference": args.reference, "null_candidates": len(null_cands), "epochs": args.epochs,
                        "lr": args.lr, "train_seconds": round(train_s, 1), "final_loss": losses[-1],
                        "seconds": round(time.perf_counter() - start, 1)}, "methods": out}
    write("mia_smol", result, null, f"MIA p-values of non-members ({args.model} fine-tuned on a known split)")


def part_identifiers(args) -> None:
    import decodelab as dl

    torch.set_num_threads(1)
    copies = (1, 2, 4, 8)
    per = 6
    null, power = [], {c: [] for c in copies}
    start = time.perf_counter()
    for seed in range(args.seeds):
        members = tiny_corpus(seed, args.members)
        idents = [dl.provenance.make_identifier(kind=args.kind, length=args.length, seed=10_000 * seed + i)
                  for i in range(per * len(copies))]
        texts = list(members)
        rng = random.Random(seed)
        for i, ident in enumerate(idents):  # identifier i goes into copies[i // per] random texts
            for j in rng.sample(range(len(texts)), copies[i // per]):
                texts[j], _ = dl.provenance.insert([texts[j]], ident, seed=rng.randrange(2**31))
                texts[j] = texts[j][0]
        lm = tiny_model(seed)
        dl.provenance.train_on_texts(lm, texts, epochs=args.epochs, batch_size=16, lr=3e-3, seed=seed)
        res = dl.provenance.detect_identifiers(lm, idents, kind=args.kind, length=args.length,
                                               alternatives=args.alternatives, seed=seed)
        for i, r in enumerate(res):
            power[copies[i // per]].append(r.p_value)
        fresh = [dl.provenance.make_identifier(kind=args.kind, length=args.length, seed=10**9 + 10_000 * seed + i)
                 for i in range(args.null)]
        null += [r.p_value for r in dl.provenance.detect_identifiers(lm, fresh, kind=args.kind, length=args.length,
                                                                     alternatives=args.alternatives, seed=seed + 1)]
        print(f"seed {seed} done, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    result = {"setup": {"model": "tiny-random char Llama (2 layers, width 64)", "texts": args.members,
                        "kind": args.kind, "length": args.length, "alternatives": args.alternatives,
                        "epochs": args.epochs, "seeds": args.seeds, "identifiers_per_copy_count": per,
                        "seconds": round(time.perf_counter() - start, 1)},
              "null_fpr": rates(null),
              "power_by_copies": {str(c): rates(power[c]) for c in copies}}
    write("identifiers", result, {"never inserted": null}, "Identifier p-values, identifiers never trained on")


def part_palimpsest(args) -> None:
    import decodelab as dl
    from decodelab.provenance.likelihood import text_logprobs
    from decodelab.provenance.palimpsest import spearman_permutation_test

    torch.set_num_threads(1)
    n = args.examples
    out = {"alice": [], "derived": [], "alice_no_reference": [], "independent": []}
    random_orders = []
    start = time.perf_counter()

    def train(seed, texts, lr=3e-3, base=None):
        lm = tiny_model(seed)
        if base is not None:
            lm.model.load_state_dict(base.model.state_dict())
        dl.provenance.train_on_texts(lm, texts, epochs=1, batch_size=4, lr=lr, seed=seed)
        return lm

    for seed in range(args.seeds):
        texts = tiny_corpus(1000 + seed, n + 60)
        order, extra = texts[:n], texts[n:]
        shuffled = list(order)
        random.Random(seed).shuffle(shuffled)
        other = list(order)
        random.Random(seed + 10_000).shuffle(other)
        alice = train(3 * seed, order)
        reference = train(3 * seed + 1, shuffled)  # same data, another order
        independent = train(3 * seed + 2, other)  # the null: same data, another order, another init
        derived = train(3 * seed, extra, lr=1e-3, base=alice)  # Alice's model fine-tuned on other text
        out["alice"].append(dl.provenance.palimpsest(alice, order, reference=reference, resamples=999).p_value)
        out["alice_no_reference"].append(dl.provenance.palimpsest(alice, order, resamples=999).p_value)
        out["derived"].append(dl.provenance.palimpsest(derived, order, reference=reference, resamples=999).p_value)
        out["independent"].append(dl.provenance.palimpsest(independent, order, reference=reference,
                                                           resamples=999).p_value)
        scores = torch.tensor([float(lp.mean()) for lp in text_logprobs(alice, order)], dtype=torch.float64)
        scores -= torch.tensor([float(lp.mean()) for lp in text_logprobs(reference, order)], dtype=torch.float64)
        gen = torch.Generator().manual_seed(seed)
        random_orders += [spearman_permutation_test(scores[torch.randperm(n, generator=gen)], 999, s)[1]
                          for s in range(50)]
        print(f"seed {seed} done, {time.perf_counter() - start:.0f} s", file=sys.stderr)
        result = {"setup": {"model": "tiny-random char Llama (2 layers, width 64), one epoch in Alice's order",
                            "examples": n, "seeds": seed + 1, "resamples": 999,
                            "derived": "Alice's model fine-tuned one epoch on 60 other texts (lr 1e-3)",
                            "reference": "same data in another random order (subtracted log-likelihoods)",
                            "seconds": round(time.perf_counter() - start, 1)},
                  "power_alice": rates(out["alice"]), "power_alice_no_reference": rates(out["alice_no_reference"]),
                  "power_derived": rates(out["derived"]), "null_independent_model": rates(out["independent"]),
                  "null_random_orders": rates(random_orders)}
        write("palimpsest", result, {"independent models": out["independent"], "random orders": random_orders},
              "Palimpsest p-values under the null")


def part_coin(args) -> None:
    import decodelab as dl
    from decodelab.provenance.coin import Auditor, inflate, sample_starts

    torch.set_num_threads(1)
    start = time.perf_counter()
    texts = tiny_corpus(0, args.members + 3 * 400)
    lm = tiny_model(0)
    dl.provenance.train_on_texts(lm, texts[:args.members], epochs=args.epochs, batch_size=16, lr=3e-3)
    pool = texts[args.members:]
    traces = [list(lm.tokenizer(" ".join(pool[3 * i:3 * i + 3]), add_special_tokens=False)["input_ids"])
              for i in range(len(pool) // 3)]
    calibration, audited = traces[:100], traces[100:]
    width = 16
    result = {"setup": {"model": "tiny-random char Llama trained on 128 stdlib paragraphs",
                        "trace": "3 held-out paragraphs (about 200 tokens)", "calibration_traces": 100,
                        "width": width, "audited_traces": len(audited)}, "null_fpr": {}, "power": {}}
    null = {}
    for blocks in (4, 16):
        auditor = Auditor(lm, [("", t) for t in calibration], blocks=blocks, width=width)

        def run(trace, seed, auditor=auditor, blocks=blocks):
            starts = sample_starts(len(trace), blocks, width, seed)
            return auditor.audit("", [trace[s:s + width] for s in starts]).p_value

        p0 = [run(t, 10_000 + i) for i, t in enumerate(audited)]
        null[f"{blocks} blocks"] = p0
        result["null_fpr"][str(blocks)] = rates(p0)
        for kind in ("random", "shuffled"):
            for fraction in (0.1, 0.25, 0.5, 1.0):
                ps = [run(inflate(t, fraction, kind=kind, vocab_size=lm.vocab_size, seed=i), 20_000 + i)
                      for i, t in enumerate(audited[:100])]
                result["power"][f"{blocks} blocks, {kind}, +{fraction:g}"] = rates(ps)
        print(f"{blocks} blocks done, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    result["setup"]["seconds"] = round(time.perf_counter() - start, 1)
    write("coin", result, null, "CoIn audit p-values of genuine traces (Bonferroni over blocks)")


def part_fingerprint(args) -> None:
    import decodelab as dl
    from decodelab.provenance.fingerprint import find_triggers, verify_fingerprint

    torch.set_num_threads(1)
    start = time.perf_counter()
    found, planted, null = {}, {}, []
    for copies in (1, 2, 4, 8):
        found[copies], planted[copies] = [], []
        for seed in range(args.seeds):
            texts = tiny_corpus(seed, args.members)
            trigger = "QZX"
            response = dl.provenance.make_identifier(kind="chars", length=12, seed=seed)
            lm = tiny_model(seed)
            dl.provenance.train_on_texts(lm, texts + [trigger + response] * copies, epochs=args.epochs,
                                         batch_size=16, lr=3e-3, seed=seed)
            best = find_triggers(lm, length=14, top=1)[0]
            found[copies].append(response[:8] in best.continuation)
            planted[copies].append(verify_fingerprint(lm, trigger, response, kind="chars", alternatives=199,
                                                      seed=seed).p_value)
            if copies == 1:
                null += [verify_fingerprint(lm, trigger, dl.provenance.make_identifier(kind="chars", length=12,
                                                                                       seed=10**6 + 100 * seed + i),
                                            kind="chars", alternatives=99, seed=i).p_value for i in range(100)]
        print(f"copies {copies} done, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    result = {"setup": {"model": "tiny-random char Llama, 128 stdlib paragraphs + the fingerprint pair",
                        "trigger": "QZX", "response": "12 random letters", "epochs": args.epochs,
                        "seeds": args.seeds, "seconds": round(time.perf_counter() - start, 1)},
              "utf_top1_reveals_response": {str(c): float(np.mean(v)) for c, v in found.items()},
              "verify_power": {str(c): rates(v) for c, v in planted.items()},
              "null_fpr": rates(null)}
    write("fingerprint", result, {"unplanted responses": null}, "Fingerprint verification p-values, unplanted")


PARTS = {"mia": part_mia, "mia-smol": part_mia_smol, "identifiers": part_identifiers, "palimpsest": part_palimpsest,
         "coin": part_coin, "fingerprint": part_fingerprint}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=sorted(PARTS), required=True)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--members", type=int, default=128)
    parser.add_argument("--reference", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--kind", default="words")
    parser.add_argument("--length", type=int, default=4)
    parser.add_argument("--alternatives", type=int, default=199)
    parser.add_argument("--null", type=int, default=200)
    parser.add_argument("--examples", type=int, default=300)
    args = parser.parse_args()
    PARTS[args.part](args)


if __name__ == "__main__":
    main()
