"""Uncertainty scores as wrong-answer detectors (AUROC, PRR) and the cascade's cost/quality curve.

Usage:
    PYTHONPATH=. python scripts/uncertainty_eval.py --questions 48 --samples 3 --out /tmp/unc/eval.json \
        [--large qwen2.5-coder-1.5b]          # the cascade SmolLM2 -> Qwen 1.5B
    PYTHONPATH=. python scripts/uncertainty_eval.py --model qwen2.5-coder-1.5b --weights int4 ...  # scores of Qwen

Answers are greedy (chat template, "Answer briefly."), checked by code
(`decodelab.uncertainty.questions`). Scores, all "higher = less sure":
- entropy: mean token entropy; max-prob: 1 - mean max-probability; nll: -sum log p (sequence
  probability);
- CCP: 1 - product of CCP over the answer's claims, judge = packaged MiniLM embedder (cosine >= 0.9
  entails) with 10 alternatives per token;
- SAR: sentence-level SAR over the greedy answer + --samples sampled answers (temperature 1), MiniLM
  similarity, temperature 0.001 as in the paper;
- UQAC: -mean log p over the attention chain from the last sentence (threshold 0.1, depth 3).
The cascade curve defers by the 0.8-quantile of token NLL (`decodelab.uncertainty.cascade`),
from the same greedy answers of both models; cost counts the small model as `--cost-ratio` of the
large one per answer (default: the measured wall-time ratio of the two batched runs).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from rich.progress import track


def answers(lm, qs, **options):
    import decodelab as dl

    prompts = [[{"role": "user", "content": f"Answer briefly. {q.text}"}] for q in qs]
    start = time.perf_counter()
    outs = dl.generate(lm, prompts, max_new_tokens=20, **options)
    return outs, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--model", default=None, help="the model whose answers are scored (default: packaged SmolLM2)")
    parser.add_argument("--weights", default="auto", help="its weight precision")
    parser.add_argument("--large", default=None, help="model for the cascade's large side (int4)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import decodelab as dl
    from decodelab.uncertainty.cascade import deferral_summary
    from decodelab.uncertainty.claims import ccp
    from decodelab.uncertainty.embedder import Embedder, EmbeddingJudge
    from decodelab.uncertainty.metrics import auroc, prr
    from decodelab.uncertainty.questions import is_correct, questions
    from decodelab.uncertainty.sar import sentence_sar, token_sars
    from decodelab.uncertainty.uqac import uqac

    qs = questions(args.questions, seed=0)
    lm = dl.load(args.model, weights=args.weights)
    model_name = args.model or "SmolLM2-135M"
    greedy, small_seconds = answers(lm, qs, temperature=0, scores="entropy,max_prob")
    samples = [answers(lm, qs, temperature=1.0, seed=s)[0] for s in range(args.samples)]
    embedder = Embedder()
    judge = EmbeddingJudge(embedder, threshold=0.9)
    rows = []
    for i in track(range(len(qs)), description="scoring"):
        q, out = qs[i], greedy[i]
        prompt = [{"role": "user", "content": f"Answer briefly. {q.text}"}]
        ids = [t for t in out.token_ids if t not in lm.eos_token_ids] or out.token_ids
        row = {"kind": q.kind, "question": q.text, "expected": q.answer, "answer": out.text,
               "wrong": not is_correct(q, out.text)}
        row["entropy"] = sum(r.extra["entropy"] for r in out.records) / len(out.records)
        row["max_prob"] = 1 - sum(r.extra["max_prob"] for r in out.records) / len(out.records)
        row["nll"] = -sum(r.logprob for r in out.records)
        claims = ccp(lm, prompt, ids, judge=judge, alternatives=10).claims
        row["ccp"] = 1 - math.prod(c["ccp"] for c in claims) if claims else 1.0
        texts = [ids] + [[t for t in s[i].token_ids if t not in lm.eos_token_ids] or s[i].token_ids
                         for s in samples]
        tsar = token_sars(lm, prompt, texts, similarity=embedder.similarity)
        sims = [[1.0 if a == b else 0.0 for b in range(len(texts))] for a in range(len(texts))]
        for a in range(len(texts)):
            others = [b for b in range(len(texts)) if b != a]
            for b, v in zip(others, embedder.similarity(tsar[a].text, [tsar[b].text for b in others])):
                sims[a][b] = v
        per = sentence_sar([math.exp(-t.value) for t in tsar], sims, 0.001)
        row["sar"] = sum(per) / len(per)
        row["uqac"] = uqac(lm, prompt, ids).value
        row["cascade_summary"] = deferral_summary(out, "nll", 0.8)
        rows.append(row)
    wrong = [r["wrong"] for r in rows]
    table = {name: {"auroc": auroc([r[name] for r in rows], wrong), "prr": prr([r[name] for r in rows], wrong)}
             for name in ("entropy", "max_prob", "nll", "ccp", "sar", "uqac")}
    result = {"questions": len(rows), "accuracy": 1 - sum(wrong) / len(wrong), "scores": table, "rows": rows,
              "small_seconds": small_seconds}
    result["model"] = model_name
    print(f"{model_name} accuracy {result['accuracy']:.3f} on {len(rows)} questions")
    print("| score | AUROC | PRR |\n|---|---|---|")
    for name, v in table.items():
        print(f"| {name} | {v['auroc']:.3f} | {v['prr']:.3f} |")
    if args.large:
        large = dl.load(args.large, weights="int4")
        big, large_seconds = answers(large, qs, temperature=0)
        big_right = [is_correct(q, o.text) for q, o in zip(qs, big)]
        ratio = small_seconds / large_seconds
        summaries = sorted(r["cascade_summary"] for r in rows)
        curve = []
        for threshold in [math.inf] + summaries[::-1] + [-math.inf]:
            deferred = [r["cascade_summary"] > threshold or threshold == -math.inf for r in rows]
            right = [big_right[i] if d else not rows[i]["wrong"] for i, d in enumerate(deferred)]
            share = sum(deferred) / len(rows)
            curve.append({"threshold": threshold, "deferred": share, "accuracy": sum(right) / len(rows),
                          "cost": ratio + share})
        result.update(large=args.large, large_accuracy=sum(big_right) / len(rows), large_seconds=large_seconds,
                      cost_ratio=ratio, curve=curve)
        print(f"{args.large} accuracy {result['large_accuracy']:.3f}; small/large time {ratio:.3f}")
        print("| deferred | accuracy | cost (large alone = 1) |\n|---|---|---|")
        for point in curve[:: max(1, len(curve) // 8)] + [curve[-1]]:
            print(f"| {point['deferred']:.2f} | {point['accuracy']:.3f} | {point['cost']:.2f} |")
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(5, 3.5))
            ax.plot([p["cost"] for p in curve], [p["accuracy"] for p in curve], marker=".")
            ax.set_xlabel("cost (large model alone = 1)")
            ax.set_ylabel("accuracy")
            ax.set_title(f"cascade {model_name} -> {args.large}")
            fig.tight_layout()
            fig.savefig((args.out or "cascade").rsplit(".", 1)[0] + "_cascade.png", dpi=120)
        except Exception as exc:  # the plot is a convenience
            print(f"no plot: {exc}", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
