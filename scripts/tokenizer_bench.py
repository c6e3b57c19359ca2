"""Tokenizer-family measurements (issue 17): JSON and PNG under docs/bench/tokenizer/.

Papers (our own code; see decodelab/tokenizer/):
- J. Hayase, A. Liu, Y. Choi, S. Oh, N. A. Smith (2024), "Data Mixture Inference: What do BPE
  Tokenizers Reveal about their Training Data?": `mixture`.
- A. K. Singh, D. J. Strouse (2024), "Tokenization counts: the impact of tokenization on arithmetic
  in frontier LLMs": `digits`.
- O. Uzan, Y. Pinter (2025), "CharBench: Evaluating the Role of Tokenization in Character-Level
  Tasks": `charbench`.

Subcommands:

mixture    --trials random mixtures (Dirichlet(1) over the categories): train a byte-level BPE with
           the `tokenizers` library on --train-chars characters of the categories' training halves
           mixed in those shares, infer the shares from its first --num-merges merges and the
           held-out halves, and record the mean absolute error (MAE) of the shares. Controls in the
           same run: the same merges shuffled (negative control: the order carries the signal), a
           uniform guess and a random Dirichlet guess. Scatter PNG: true vs inferred share.
digits     `dl.tokenizer.digits` on a model: accuracy per grouping (none / l2r / r2l).
charbench  `dl.tokenizer.charbench` on a model: accuracy per task and tokenization feature; bar PNG.

    nice -n 19 python scripts/tokenizer_bench.py mixture --trials 30
    nice -n 19 python scripts/tokenizer_bench.py digits --model smollm2-135m --num-problems 60
    nice -n 19 python scripts/tokenizer_bench.py charbench --model smollm2-135m --num-words 40
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

import decodelab as dl
from decodelab.bench.report import json_safe

OUT = Path(__file__).resolve().parent.parent / "docs" / "bench" / "tokenizer"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in name).strip("-")


def run_mixture(args: argparse.Namespace) -> dict:
    from rich.progress import track

    tk = dl.tokenizer
    cats = tk.builtin_categories(args.categories.split(","), args.max_chars)
    names = list(cats)
    rng = np.random.default_rng(args.seed)
    trials = []
    for trial in track(range(args.trials), description="mixtures", transient=True):
        truth = tk.random_proportions(names, rng)
        tok = tk.train_bpe(tk.mixed_texts(cats, truth, args.train_chars, seed=trial), args.num_merges)
        result = tk.infer_mixture(tok, cats, num_merges=args.num_merges, top_pairs=args.top_pairs)
        shuffled_merges = tk.merges_of(tok)
        random.Random(trial).shuffle(shuffled_merges)
        shuffled = tk.infer_mixture(tok, cats, num_merges=args.num_merges, top_pairs=args.top_pairs,
                                    merges=shuffled_merges)
        guess = tk.random_proportions(names, rng)
        trials.append({"true": truth, "inferred": result.proportions, "shuffled_merges": shuffled.proportions,
                       "random_guess": guess,
                       "mae": tk.mean_absolute_error(truth, result.proportions),
                       "mae_shuffled_merges": tk.mean_absolute_error(truth, shuffled.proportions),
                       "mae_uniform_guess": tk.mean_absolute_error(truth, dict.fromkeys(names, 1 / len(names))),
                       "mae_random_guess": tk.mean_absolute_error(truth, guess),
                       "seconds": result.seconds, "constraints": result.constraints})
    summary = {k: float(np.mean([t[k] for t in trials])) for k in
               ("mae", "mae_shuffled_merges", "mae_uniform_guess", "mae_random_guess", "seconds")}
    summary["mae_median"] = float(np.median([t["mae"] for t in trials]))
    summary["mae_p90"] = float(np.quantile([t["mae"] for t in trials], 0.9))
    summary["mse"] = float(np.mean([np.mean([(t["true"][n] - t["inferred"][n]) ** 2 for n in names]) for t in trials]))
    summary["mse_random_guess"] = float(np.mean([np.mean([(t["true"][n] - t["random_guess"][n]) ** 2 for n in names])
                                                 for t in trials]))
    out = {"config": vars(args),
           "categories": {n: {"source": c.source, "train_chars": c.chars("train"), "heldout_chars": c.chars()}
                          for n, c in cats.items()},
           "summary": summary, "trials": trials}
    _scatter(trials, names, OUT / f"mixture_{len(names)}cats_{args.num_merges}merges.png", summary, args)
    return out


def _scatter(trials, names, path: Path, summary: dict, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8), sharex=True, sharey=True)
    for ax, key, title in ((axes[0], "inferred", f"merge list (MAE {summary['mae']:.3f})"),
                           (axes[1], "shuffled_merges", f"shuffled merges, control (MAE {summary['mae_shuffled_merges']:.3f})")):
        for name in names:
            ax.scatter([t["true"][name] for t in trials], [t[key][name] for t in trials], s=14, label=name, alpha=0.8)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("true share")
    axes[0].set_ylabel("inferred share")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Data mixture inference from BPE merges: {len(trials)} random mixtures, {args.num_merges} merges, "
                 f"{args.train_chars} training chars", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_model(args: argparse.Namespace) -> dict:
    lm = dl.load(args.model, weights=args.weights)
    start = time.perf_counter()
    if args.command == "digits":
        report = dl.tokenizer.digits(lm, num_problems=args.num_problems, min_digits=args.min_digits,
                                     max_digits=args.max_digits, seed=args.seed)
    else:
        report = dl.tokenizer.charbench(lm, num_words=args.num_words, tasks=args.tasks, seed=args.seed)
        _bars(report, OUT / f"charbench_{_slug(args.model or 'smollm2-135m')}.png")
    out = report.as_dict()
    out["seconds"] = time.perf_counter() - start
    print(report.table())
    return out


def _bars(report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.by_feature()
    features = list(dict.fromkeys(r["feature"] for r in rows))
    fig, axes = plt.subplots(1, len(features), figsize=(3.2 * len(features), 3.6), sharey=True)
    for ax, feature in zip(np.atleast_1d(axes), features):
        chosen = [r for r in rows if r["feature"] == feature]
        tasks = list(dict.fromkeys(r["task"] for r in chosen))
        order = {"low": 0, "mid": 1, "high": 2, "false": 0, "true": 1}
        buckets = sorted({r["bucket"] for r in chosen}, key=lambda b: (order.get(b, 0), b))
        width = 0.8 / max(len(tasks), 1)
        for k, task in enumerate(tasks):
            acc = {r["bucket"]: (r["accuracy"], r["n"]) for r in chosen if r["task"] == task}
            xs = [i + k * width for i, b in enumerate(buckets) if b in acc]
            ax.bar(xs, [acc[b][0] for b in buckets if b in acc], width, label=task)
            for x, b in zip(xs, [b for b in buckets if b in acc]):
                ax.text(x, acc[b][0] + 0.01, str(acc[b][1]), ha="center", fontsize=6)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(buckets))], buckets)
        ax.set_title(feature, fontsize=9)
    np.atleast_1d(axes)[0].set_ylabel("accuracy (n above bars)")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle(f"CharBench-style suite, {report.model[:60]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replot(path: Path) -> None:
    """Redraw a charbench PNG from its JSON (items and features are stored there)."""
    from decodelab.tokenizer.char_suite import CharbenchReport, Item

    data = json.loads(path.read_text())
    items = [Item(r["task"], r["word"], r["letter"], r["answer"], output=r["output"], correct=r["correct"],
                  features={k: r[k] for k in ("word_tokens", "letter_spans_tokens", "letter_at_token_start",
                                              "log_frequency") if k in r}) for r in data["items"]]
    _bars(CharbenchReport(data["model"], data["options"], items), path.with_suffix(".png"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    mix = sub.add_parser("mixture")
    mix.add_argument("--trials", type=int, default=30)
    mix.add_argument("--categories", default="english,python,c,afm")
    mix.add_argument("--max-chars", type=int, default=1_000_000)
    mix.add_argument("--train-chars", type=int, default=300_000)
    mix.add_argument("--num-merges", type=int, default=500)
    mix.add_argument("--top-pairs", type=int, default=30)
    mix.add_argument("--seed", type=int, default=0)
    for name in ("digits", "charbench"):
        p = sub.add_parser(name)
        p.add_argument("--model", default=None)
        p.add_argument("--weights", default="auto")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--num-problems", type=int, default=60)
        p.add_argument("--min-digits", type=int, default=3)
        p.add_argument("--max-digits", type=int, default=7)
        p.add_argument("--num-words", type=int, default=40)
        p.add_argument("--tasks", default="count,locate,spell")
    sub.add_parser("replot").add_argument("json", type=Path, help="a charbench JSON written by this script")
    args = parser.parse_args()
    if args.command == "replot":
        replot(args.json)
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    out = run_mixture(args) if args.command == "mixture" else run_model(args)
    tag = (f"mixture_{len(args.categories.split(','))}cats_{args.num_merges}merges" if args.command == "mixture"
           else f"digits_{_slug(args.model or 'smollm2-135m')}_{args.min_digits}-{args.max_digits}digits"
           if args.command == "digits" else f"charbench_{_slug(args.model or 'smollm2-135m')}")
    path = OUT / f"{tag}.json"
    path.write_text(json.dumps(json_safe(out), indent=1))
    if args.command == "mixture":
        print(json.dumps(out["summary"], indent=1))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
