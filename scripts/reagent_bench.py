"""ReAGent time and peak memory: decodelab's batched probes vs a per-replacement loop vs inseq, same run.

Usage:
    PYTHONPATH=. python scripts/reagent_bench.py --prompts 3 --new-tokens 12 --max-steps 30 [--inseq PATH]

All three run the same algorithm settings (ratio 0.3, 16 probes per step, at most --max-steps
steps, keep top 5, stop at top-3) on SmolLM2 (fp32) with the same prompts and outputs (greedy,
generated once). Replacements are uniform over the vocabulary in every implementation: inseq's
default POS-tag sampler needs NLTK tagger data from the network, so the bench swaps in a uniform
sampler of the same interface (`--inseq PATH`: a folder where inseq 0.7.1 is installed, which is
not a dependency of decodelab). Peak memory is the peak RSS above the level before each run,
sampled every 2 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import torch

PROMPTS = [
    "The capital of France is Paris. The capital of Italy is",
    "Alice gave Bob a book because she had finished reading it. The book belonged to",
    "To convert kilometres to miles, multiply the distance by 0.621. So 10 kilometres is about",
    "Water boils at 100 degrees Celsius at sea level. On a high mountain it boils at a",
]


class PeakRSS:
    """Peak resident memory above the level at entry, sampled in a thread."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _poll(self):
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def megabytes(self) -> float:
        return (self.peak - self.base) / 1e6


def run_inseq(lm, prompt: str, output: str, options: dict):
    import inseq
    import inseq.attr.feat.ops.reagent as reagent_module
    from inseq.attr.feat.ops.reagent_core.token_sampler import TokenSampler

    ids = None

    class UniformSampler(TokenSampler):
        def __init__(self, tokenizer, identifier=None, device=None, **kwargs):
            nonlocal ids
            from decodelab.attribution.reagent import replacement_pool

            ids = replacement_pool(lm)
            self.ids = ids

        def __call__(self, input_ids, **kwargs):
            return self.ids[torch.randint(len(self.ids), input_ids.shape)].to(input_ids.device)

    reagent_module.POSTagTokenSampler = UniformSampler
    model = inseq.load_model(lm.model, "reagent", tokenizer=lm.tokenizer, keep_top_n=options["keep_top_n"],
                             stopping_condition_top_k=options["stop_top_k"], replacing_ratio=options["ratio"],
                             max_probe_steps=options["max_steps"], num_probes=options["probes"])
    return model.attribute(prompt, prompt + output, show_progress=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=12)
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--inseq", default=None, help="folder with inseq installed (added to sys.path)")
    parser.add_argument("--skip-loop", action="store_true")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    import decodelab as dl

    torch.manual_seed(0)
    lm = dl.load(weights="fp32")
    options = {"ratio": 0.3, "probes": 16, "max_steps": args.max_steps, "min_steps": 1, "keep_top_n": 5,
               "stop_top_k": 3}
    rows = []
    for prompt in PROMPTS[: args.prompts]:
        out = dl.generate(lm, prompt, chat=False, max_new_tokens=args.new_tokens, temperature=0)
        output_ids = [t for t in out.token_ids if t not in lm.eos_token_ids]
        row = {"prompt_tokens": len(lm.encode(prompt, chat=False)), "output_tokens": len(output_ids)}
        for name, loop in (("batched", False), ("loop", True)):
            if loop and args.skip_loop:
                continue
            with PeakRSS() as mem:
                start = time.perf_counter()
                a = dl.attribute(lm, prompt, output_ids, chat=False, loop=loop, **options)
                seconds = time.perf_counter() - start
            row[name] = {"seconds": seconds, "peak_mb": mem.megabytes, "forwards": a.forwards,
                         "mean_steps": sum(a.steps) / len(a.steps)}
        if args.inseq:
            sys.path.insert(0, args.inseq)
            with PeakRSS() as mem:
                start = time.perf_counter()
                run_inseq(lm, prompt, lm.decode(output_ids), options)
                seconds = time.perf_counter() - start
            row["inseq"] = {"seconds": seconds, "peak_mb": mem.megabytes}
        rows.append(row)
        print(json.dumps(row), flush=True)
    names = [n for n in ("batched", "loop", "inseq") if n in rows[0]]
    print("\n| implementation | total s | ratio to batched | max peak MB above start |")
    print("|---|---|---|---|")
    base = sum(r["batched"]["seconds"] for r in rows)
    for n in names:
        total = sum(r[n]["seconds"] for r in rows)
        print(f"| {n} | {total:.1f} | {total / base:.2f} | {max(r[n]['peak_mb'] for r in rows):.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
