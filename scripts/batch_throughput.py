"""Throughput of `decodelab batch generate` with 1 and 2 workers, local and on Ray, side by side.

Writes the first N prompts of the packaged specbench_mini suite as a JSONL dataset, then runs
the same job in each configuration, in a rotating order over R rounds (so that drift of a shared
machine lands on every configuration alike), checks that every configuration wrote the same
bytes, and prints rows/s two ways: over the whole job (model loading and worker start included)
and at steady state (first record to last). Usage:

    python scripts/batch_throughput.py --rows 24 --max-new-tokens 32 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from decodelab.batch import JobSpec, run_job
from decodelab.corpus import load_suite

CONFIGS = {  # name: (workers, ray, threads per worker)
    "local 1 worker x 2 threads": (1, None, 2),
    "local 1 worker x 1 thread": (1, None, 1),
    "local 2 workers x 1 thread": (2, None, 1),
    "ray 1 actor x 1 thread": (1, "local", 1),
    "ray 2 actors x 1 thread": (2, "local", 1),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default=None)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names of CONFIGS")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="batch-throughput-"))
    prompts = load_suite("specbench_mini", limit=args.rows).prompts
    (folder / "in.jsonl").write_text("".join(json.dumps({"id": p.id, "prompt": p.messages}) + "\n" for p in prompts))
    names = [n.strip() for n in args.configs.split(",")]
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in names}
    outputs: dict[str, bytes] = {}
    load = [os.getloadavg()[0]]
    for round_ in range(args.rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            workers, ray, threads = CONFIGS[name]
            spec = JobSpec("generate", model=args.model, threads=threads, seed=1,
                           options={"max_new_tokens": args.max_new_tokens, "temperature": 0.7})
            stamps: list[float] = []
            out = folder / f"out-{round_}-{names.index(name)}.jsonl"
            summary = run_job(spec, folder / "in.jsonl", out, workers=workers, ray=ray, progress=False,
                              on_record=lambda record, stamps=stamps: stamps.append(time.perf_counter()))
            steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
            results[name].append((summary.rows_per_second, steady, summary.new_tokens))
            outputs[name] = out.read_bytes()
            load.append(os.getloadavg()[0])
            print(f"round {round_} {name}: {summary.rows_per_second:.3f} rows/s whole job, {steady:.3f} steady",
                  flush=True)
    same = len(set(outputs.values())) == 1
    print(f"\n{args.rows} rows, {args.max_new_tokens} new tokens max, temperature 0.7; outputs identical across "
          f"configurations: {same}; 1-min load average during the runs: {min(load):.1f}-{max(load):.1f}")
    base = statistics.median(r[1] for r in results[names[0]])
    print(f"| configuration | rows/s, whole job (median) | rows/s, steady state (median) | steady vs {names[0]} |")
    print("|---|---|---|---|")
    for name, runs in results.items():
        whole, steady = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(f"| {name} | {whole:.3f} | {steady:.3f} | {steady / base:.2f}x |")


if __name__ == "__main__":
    main()
