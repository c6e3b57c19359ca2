"""How far each lossy method moves the output law: exact TV and KL against its knob, on tiny models.

Usage:
    PYTHONPATH=. python scripts/lossy_tv.py --out docs/bench/lossy/tv.json   # also writes tv.png beside it

Target: tiny-random (vocabulary 24, 4 layers, init_std 0.25: peaked laws); draft: the target's first
2 layers with its head (a correlated draft, as real ones are). For each method and knob value the
law of `--length` generated tokens after a fixed prompt is computed exactly by enumeration
(`decodelab.lossy.law.output_law`: every draft chain, accept/reject outcome and next token, with
the method's own decisions), as is the target's law under plain sampling with the same sampler
(temperature, top-k; off by default). Branches below `--min-mass` are dropped and their total mass
reported (`dropped_mass`: a bound on the error of TV). TV = half the L1 distance; KL(method ||
target) in nats over the method's enumerated sequences, each with the target's exact probability
(infinite, written null, if the method puts mass where the target's sampler has none: top-k). The exact
`draft` method (speculative sampling) is the lossless reference. Nothing is sampled.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.progress import track

PROMPT = [1, 5, 6, 5, 6, 5]
SWEEPS = {  # method: (knob, values from exact (or closest) to loosest, fixed options)
    "lossy-relaxed": ("neighbours", [0, 1, 2, 4, 8, 16], {"k": 2}),
    "lossy-judge": ("threshold", [1.0, 0.9, 0.7, 0.5, 0.3, 0.1, 0.0], {"k": 2, "context_tokens": 8}),
    "lossy-route": ("min_confidence", [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.0], {"k": 2}),
    "lossy-early-exit": ("min_confidence", [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.0],
                         {"k": 2, "max_layers": 3, "min_layers": 1}),
    "lossy-thinking": ("guide_tokens", [3, 2, 1, 0], {"k": 2, "reflection": "l,s,w"}),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/bench/lossy/tv.json")
    parser.add_argument("--length", type=int, default=3, help="generated tokens (2-4)")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=0, help="0 = off (full support: KL stays finite)")
    parser.add_argument("--min-mass", type=float, default=1e-8,
                        help="drop enumeration branches below this probability (their total is reported)")
    parser.add_argument("--vocab", type=int, default=24, help="vocabulary (>= 24 holds 'y'/'n' for the judge)")
    args = parser.parse_args()
    if not 2 <= args.length <= 4:
        parser.error("--length must be 2, 3 or 4")
    import decodelab as dl
    from decodelab.bench.report import json_safe
    from decodelab.lossy.law import NextLaws, kl_to_target, output_law, target_law, total_variation
    from decodelab.sampling import SamplingConfig
    from decodelab.speculative import derive_lm

    target = dl.load("tiny-random", vocab_size=args.vocab, seed=0, init_std=0.25, num_layers=4)
    draft = derive_lm(target, num_layers=2)
    sampler = {"temperature": args.temperature, "top_k": args.top_k}
    laws = NextLaws(SamplingConfig(**sampler))
    exact = target_law(target, PROMPT, args.length, laws=laws, min_mass=args.min_mass)

    def measure(method: str, options: dict) -> dict:
        start = time.perf_counter()
        if method != "lossy-early-exit":
            options = {"draft": draft, **options}
        law, dropped = output_law(target, PROMPT, args.length, method, options, laws=laws, min_mass=args.min_mass)
        return {"tv": total_variation(law, exact), "kl": kl_to_target(law, target, PROMPT, laws), "dropped_mass": dropped,
                "sequences": len(law), "seconds": round(time.perf_counter() - start, 2)}

    results = {"reference": {"method": "draft", **measure("draft", {"k": 2})}, "methods": {}}
    jobs = [(m, knob, v, fixed) for m, (knob, values, fixed) in SWEEPS.items() for v in values]
    for method, knob, value, fixed in track(jobs, description="enumerating laws"):
        row = {knob: value, **measure(method, {**fixed, knob: value})}
        results["methods"].setdefault(method, {"knob": knob, "fixed": fixed, "points": []})["points"].append(row)
    results["setup"] = {"target": target.name, "draft": "target's first 2 layers + head", "prompt": PROMPT,
                        "length": args.length, "sampler": sampler,
                        "command": f"PYTHONPATH=. python scripts/lossy_tv.py --out {args.out} --length {args.length} "
                                   f"--temperature {args.temperature} --top-k {args.top_k} --vocab {args.vocab} "
                                   f"--min-mass {args.min_mass}"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_safe(results), indent=1) + "\n")
    plot(results, out.with_suffix(".png"))
    for method, data in results["methods"].items():
        print(method, data["knob"], [(p[data["knob"]], round(p["tv"], 4)) for p in data["points"]])
    print("reference (draft, lossless): tv", results["reference"]["tv"])
    return 0


def plot(results: dict, path: Path) -> None:
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = results["methods"]
    fig, axes = plt.subplots(2, len(methods), figsize=(3.3 * len(methods), 5.6), squeeze=False)
    ref = results["reference"]
    for col, (method, data) in enumerate(methods.items()):
        knob = data["knob"]
        xs = [p[knob] for p in data["points"]]
        for row, metric in enumerate(("tv", "kl")):
            ax = axes[row][col]
            ys = [p[metric] if p[metric] is not None and math.isfinite(p[metric]) else float("nan")
                  for p in data["points"]]
            ax.plot(xs, ys, "o-", label=method)
            ax.axhline(ref[metric] or 0.0, color="grey", linestyle="--", label="draft (lossless)")
            ax.set_xlabel(knob)
            ax.set_ylabel("TV" if metric == "tv" else "KL(method || target), nats")
            if row == 0:
                ax.set_title(method, fontsize=9)
                ax.set_ylim(-0.02, 1.02)
            if col == 0 and row == 0:
                ax.legend(fontsize=7)
    setup = results["setup"]
    fig.suptitle(f"exact law of {setup['length']} tokens vs the target's ({setup['target']}, "
                 f"T={setup['sampler']['temperature']}, top-k {setup['sampler']['top_k'] or 'off'}); missing KL points: infinite",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
