"""Microbenchmarks behind docs/benchmarks.md "Few-query attention in float32 and an 8-row kernel pass".

  python scripts/kernel_bench.py int4     # decodelab's int4 kernel: ms per call, rows 1..8, Qwen 1.5B shapes
  python scripts/kernel_bench.py sdpa     # torch's CPU SDPA for one query: bfloat16 vs float32 keys
  python scripts/kernel_bench.py tn MODEL [--weights int4]
                                          # t(n): one forward of n new tokens at context 300, median of 7

Random weights and activations for the first two (speed does not depend on the values); the
packaged model and a suite text for t(n). Threads: torch's default (set OMP_NUM_THREADS to change).
The int4 table calls one weight again and again, so a weight that fits the last-level cache is read
from it, not from memory: it shows compute, not the streaming a model's forward does.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

ROWS = (1, 2, 3, 4, 6, 8)
QWEN15_SHAPES = ((8960, 1536), (1536, 8960), (1536, 1536), (151936, 1536))


def _per_call_seconds(fn: Callable[[], object], budget_s: float = 0.5) -> float:
    for _ in range(3):
        fn()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < budget_s:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def int4_table(group: int = 32) -> None:
    from decodelab.engine import native_int4

    if not native_int4.available():
        raise SystemExit(f"decodelab's kernel is not in use here: {native_int4.status()}")
    print(f"| weight | {' | '.join(f'rows {m}' for m in ROWS)} |  (ms per call)")
    for n, k in QWEN15_SHAPES:
        codes = torch.randint(0, 16, (n, k), dtype=torch.uint8)
        tiles, tile_scales = native_int4.pack_tiles(codes, torch.rand(n, k // group) / 100,
                                                    torch.randn(n, k // group) / 100, group)
        cells = []
        for m in ROWS:
            x = torch.randn(m, k).to(torch.bfloat16)
            cells.append(_per_call_seconds(lambda x=x, t=tiles, ts=tile_scales: native_int4.int4_matmul(x, t, ts, group)) * 1e3)
        print(f"| {n}x{k} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


def sdpa_table() -> None:
    print("| heads/kv heads/dim, keys, rows | bfloat16 us | float32 us |")
    for heads, kv_heads, dim, keys, rows in ((12, 2, 128, 300, 1), (12, 2, 128, 2000, 1), (9, 3, 64, 300, 1),
                                             (9, 3, 64, 2000, 1), (12, 2, 128, 300, 8)):
        cells = []
        for dtype in (torch.bfloat16, torch.float32):
            q = torch.randn(rows, heads, 1, dim, dtype=dtype)
            k, v = (torch.randn(rows, kv_heads, keys, dim, dtype=dtype) for _ in range(2))
            mask = torch.zeros(rows, 1, 1, keys, dtype=dtype) if rows > 1 else None
            def one_call(q=q, k=k, v=v, mask=mask) -> torch.Tensor:
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
            cells.append(_per_call_seconds(one_call) * 1e6)
        print(f"| {heads}/{kv_heads}/{dim}, {keys}, {rows} | {cells[0]:.0f} | {cells[1]:.0f} |")


def tn_table(model: str, weights: str, context: int = 300) -> None:
    import decodelab as dl
    from decodelab.corpus import suite_texts
    from decodelab.engine.sequence import Sequence

    lm = dl.load(model, weights=weights)
    texts = suite_texts("specbench_mini")
    ids = lm.tokenizer("\n\n".join(texts[: 8 * (1 + context // 300)]))["input_ids"][:context]
    if len(ids) < context:
        raise SystemExit(f"the suite's texts give only {len(ids)} tokens of context")
    seq = Sequence(lm, [ids])
    seq.prefill()
    cells = []
    for n in (1, 2, 3, 4, 6, 8, 12, 16):
        times = []
        for _ in range(7):
            start = time.perf_counter()
            seq.forward([ids[:n]])
            times.append(time.perf_counter() - start)
            seq.rollback(n)
        cells.append(statistics.median(times) * 1e3)
    print(f"| model (context {context}) | n=1 | 2 | 3 | 4 | 6 | 8 | 12 | 16 |  (ms)")
    print(f"| {model} {weights} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["int4", "sdpa", "tn"])
    parser.add_argument("model", nargs="?", default="smollm2-135m")
    parser.add_argument("--weights", default="int4")
    parser.add_argument("--context", type=int, default=300, help="tokens of context before the forward (tn)")
    args = parser.parse_args()
    if not 1 <= args.context <= 32768:
        parser.error("--context must be between 1 and 32768 tokens")
    if args.what == "int4":
        int4_table()
    elif args.what == "sdpa":
        sdpa_table()
    else:
        tn_table(args.model, args.weights, args.context)


if __name__ == "__main__":
    main()
