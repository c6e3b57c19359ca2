"""Plain greedy decoding at each weight precision, HF generate fp32 and llama.cpp, in one process.

For one model: ms/token of decode (prefill excluded) for decodelab at fp32 / int8 / int4 / auto
(the GGUF's own precision), Hugging Face `generate` on the fp32 model and llama.cpp on the same
GGUF file, the same prompts, methods interleaved prompt by prompt (so load swings hit all of
them); the floor = weight bytes read per token / measured copy bandwidth; greedy agreement with
fp32 (first divergence position); perplexity on held-out text (not in the prompts); load average.

Usage: python scripts/fastcpu_bench.py MODEL [--prompts 6] [--tokens 64] [--threads 2] [--json out.json]
Peak memory per precision: python scripts/fastcpu_bench.py MODEL --memory WEIGHTS (one load per process).
Verify cost t(n), n = 1..16, per precision: python scripts/fastcpu_bench.py MODEL --tn
`--precisions` may name `int4-torch`: int4 with PyTorch's kernel instead of decodelab's own, and
`int4-torch-glue`: int4 on decodelab's kernel with the decoder layers glued in PyTorch instead of C.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import resource
import statistics
import textwrap
import time

import torch

import decodelab as dl
from decodelab.bench.methods import RunSettings, make_method
from decodelab.bench.suite import load_suite
from decodelab.engine import native_int4
from decodelab.engine.quantized_linear import Int4Linear, Int8Linear, QuantizedEmbedding

PRECISIONS = ("fp32", "int8", "int4", "auto")
TORCH_KERNEL = "int4-torch"  # int4 with PyTorch's kernel instead of decodelab's (engine/native_int4.py)
TORCH_GLUE = "int4-torch-glue"  # int4 on decodelab's kernel, layers glued in PyTorch, not in C (engine/native_layers.py)


def load_precision(model: str, weights: str):
    if weights == TORCH_KERNEL:
        with native_int4.torch_kernel():
            return dl.load(model, weights="int4", cache=False)
    if weights == TORCH_GLUE:
        from decodelab.engine.direct_forward import DirectForward

        lm = dl.load(model, weights="int4", cache=False)
        direct = DirectForward.of(lm.model)
        if direct is not None:
            direct.native = None
        return lm
    return dl.load(model, weights=weights)


def weight_bytes_per_token(lm) -> int:
    """Bytes of weights one decode step reads (embedding: one row; KV cache not counted)."""
    total = 0
    seen = set()
    for module in lm.model.modules():
        if isinstance(module, QuantizedEmbedding):
            continue
        if isinstance(module, (Int4Linear, Int8Linear)) and module.native:
            total += module.tiles.numel() + module.tile_scales.numel() * 2
        elif isinstance(module, Int4Linear):
            total += module.packed.numel() + module.scales_and_zeros.numel() * 2
        elif isinstance(module, Int8Linear):
            total += module.codes.numel() + module.scales.numel() * 2
        elif isinstance(module, torch.nn.Linear):
            if id(module.weight) not in seen:
                seen.add(id(module.weight))
                total += module.weight.numel() * module.weight.element_size()
        elif not isinstance(module, torch.nn.Embedding):
            for p in module.parameters(recurse=False):
                total += p.numel() * p.element_size()
    return total


def copy_bandwidth(threads: int, size_mb: int = 512) -> float:
    """Bytes per second moved (read + write) by a large tensor copy, best of 5."""
    torch.set_num_threads(threads)
    src = torch.ones(size_mb * (1 << 20) // 4)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(6):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best


def heldout_texts() -> list[str]:
    """Text not in any prompt: Python's textwrap source and a passage of the project's design notes."""
    code = inspect.getsource(textwrap)
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "README.md"), encoding="utf-8") as f:
        prose = f.read()
    return [code, prose]


def perplexity(lm, text: str, max_tokens: int = 512) -> float:
    ids = lm.tokenizer(text)["input_ids"][:max_tokens]
    with torch.inference_mode():
        logits = lm.model(torch.tensor([ids])).logits[0, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]))
    return float(torch.exp(nll))


def llama_perplexity(run, lm, text: str, max_tokens: int = 512) -> float:
    """Perplexity from llama.cpp's own logits, teacher-forced token by token on the same ids."""
    from decodelab.bench.llama_cpp import llama_cpp_token_logprobs

    logprobs = llama_cpp_token_logprobs(run, lm.tokenizer(text)["input_ids"][:max_tokens])
    return math.exp(-sum(logprobs) / len(logprobs))


def print_perplexities(model: str, precisions: list[str], json_path: str | None) -> None:
    """Perplexity of each precision and of llama.cpp (teacher-forced, token by token) on the same ids."""
    from decodelab.bench.llama_cpp import llama_cpp_runner

    texts = heldout_texts()
    rows = {}
    gguf_model = None
    for w in precisions:
        lm = load_precision(model, w)
        rows[w] = [round(perplexity(lm, t), 3) for t in texts]
        print(w, rows[w], flush=True)
        if lm.gguf_path is not None:
            gguf_model = lm
    if gguf_model is None:
        gguf_model = dl.load(model, weights="auto")
    run = llama_cpp_runner(gguf_model)
    rows["llama.cpp"] = [round(llama_perplexity(run, gguf_model, t), 3) for t in texts]
    print(f"\n{model}: perplexity on 512 held-out tokens (Python's textwrap source, the project README)")
    print("| weights | code | prose |")
    print("|---|---:|---:|")
    for name, (code, prose) in rows.items():
        print(f"| {name} | {code} | {prose} |")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"model": model, "perplexity": rows}, f, indent=1)


def first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--no-hf", action="store_true")
    parser.add_argument("--no-llama", action="store_true")
    parser.add_argument("--memory", default=None, help="only load at this precision and report peak RSS")
    parser.add_argument("--json", default=None)
    parser.add_argument("--perplexity", action="store_true",
                        help="only perplexity on the held-out texts: each precision and llama.cpp's own logits")
    parser.add_argument("--tn", action="store_true", help="only measure t(n) for n = 1..16 per precision")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.tn:
        from decodelab.speculative.cost import verify_cost_curve

        sizes = tuple(range(1, 17))
        print(f"{args.model}, {args.threads} threads, context 256, ms (fastest of 3); load average "
              f"{os.getloadavg()[0]:.1f}")
        print("| weights | " + " | ".join(f"n={n}" for n in sizes) + " |")
        print("|---|" + "---:|" * len(sizes))
        for w in args.precisions.split(","):
            curve = verify_cost_curve(load_precision(args.model, w), sizes=sizes, use_cache=False)
            print(f"| {w} | " + " | ".join(f"{1000 * curve[n]:.1f}" for n in sizes) + " |", flush=True)
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        return
    if args.perplexity:
        print_perplexities(args.model, args.precisions.split(","), args.json)
        return
    if args.memory:
        start = time.perf_counter()
        lm = dl.load(args.model, weights=args.memory)
        loaded = time.perf_counter() - start
        import psutil

        after_load = psutil.Process().memory_info().rss
        dl.generate(lm, "Say hello.", max_new_tokens=8, temperature=0)
        print(json.dumps({"model": args.model, "weights": args.memory, "load_s": round(loaded, 1),
                          "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
                          "rss_after_load_gb": round(after_load / 1e9, 2)}))
        return

    bandwidth = copy_bandwidth(args.threads)
    models = {w: load_precision(args.model, w) for w in args.precisions.split(",")}
    fp32 = models.get("fp32") or dl.load(args.model, weights="fp32")
    methods = {f"decodelab {w}": make_method("plain", lm) for w, lm in models.items()}
    if not args.no_hf:
        methods["HF generate fp32"] = make_method("hf", fp32)
    if not args.no_llama:
        try:
            methods["llama.cpp"] = make_method("llama-cpp", fp32)
        except dl.InvalidOption as exc:
            print(f"llama.cpp skipped: {exc}")
    suite = list(load_suite("specbench_mini", per_category=1))[: args.prompts]
    settings = RunSettings(args.tokens, temperature=0.0)
    for method in methods.values():  # warm-up
        method(suite[0].messages, RunSettings(4, temperature=0.0))
    runs: dict[str, list] = {name: [] for name in methods}
    loads = []
    for prompt in suite:
        loads.append(os.getloadavg()[0])
        for name, method in methods.items():
            runs[name].append(method(prompt.messages, settings))
    loads.append(os.getloadavg()[0])

    reference = runs.get("decodelab fp32")
    texts = heldout_texts()
    rows = []
    for name, method_runs in runs.items():
        decode = sum(r.decode_time for r in method_runs)
        tokens = sum(max(r.new_tokens - 1, 1) for r in method_runs)  # the first token comes from the prefill
        row = {"method": name, "ms_per_token": 1000 * decode / tokens, "tokens": tokens}
        precision = name.split()[-1]
        lm = models.get(precision) if name.startswith("decodelab") else (fp32 if name.startswith("HF") else None)
        if lm is not None:
            row["weight_bytes"] = weight_bytes_per_token(lm)
            row["floor_ms"] = 1000 * row["weight_bytes"] / bandwidth
        if reference is not None:
            div = [first_divergence(a.token_ids, b.token_ids) for a, b in zip(method_runs, reference)]
            row["identical_prompts"] = sum(d is None for d in div)
            row["first_divergence"] = [d for d in div]
        if name.startswith("decodelab"):
            row["perplexity"] = [round(perplexity(lm, t), 3) for t in texts]
        elif name == "llama.cpp":
            row["perplexity"] = [round(llama_perplexity(methods[name].run, fp32, t), 3) for t in texts]
        rows.append(row)
    result = {"model": args.model, "threads": args.threads, "prompts": len(suite), "max_new_tokens": args.tokens,
              "copy_bandwidth_gb_s": bandwidth / 1e9, "loadavg_during": [round(x, 2) for x in loads],
              "loadavg_median": statistics.median(loads), "rows": rows}
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    hf = next((r["ms_per_token"] for r in rows if r["method"].startswith("HF")), None)
    llama = next((r["ms_per_token"] for r in rows if r["method"] == "llama.cpp"), None)
    print(f"\n{args.model}: {len(suite)} prompts x {args.tokens} new tokens, greedy, {args.threads} threads; "
          f"copy bandwidth {bandwidth / 1e9:.1f} GB/s; load average {min(loads):.1f}-{max(loads):.1f}")
    print("| method | ms/token | vs HF fp32 | vs llama.cpp | weight MB/token | floor ms/token | identical to fp32 | "
          "first divergence | perplexity (code, prose) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        ms = r["ms_per_token"]
        floor = f"{r['weight_bytes'] / 1e6:.0f} | {r['floor_ms']:.1f}" if "weight_bytes" in r else "- | -"
        print(f"| {r['method']} | {ms:.1f} | {hf / ms if hf else float('nan'):.2f}x | "
              f"{ms / llama if llama else float('nan'):.2f}x | {floor} | "
              f"{r.get('identical_prompts', '-')}/{len(suite)} | {r.get('first_divergence', '-')} | "
              f"{r.get('perplexity', '-')} |")


if __name__ == "__main__":
    main()
