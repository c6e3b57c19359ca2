"""Measured verification cost t(n): time of one target forward over n new tokens.

Measured once per model, weight precision and machine (fastest of a few runs at a fixed context) and cached in
the decodelab cache folder, so draft-length and tree-size choices follow this hardware rather
than a GPU paper's constants.
"""

from __future__ import annotations

import json
import platform
import time

import torch

from ..engine.sequence import Sequence
from ..models.lm import LM
from ..models.registry import cache_dir


def _cache_file(lm: LM, context: int):
    weights = getattr(lm, "weights", "fp32")  # t(n) differs a lot between int4/int8/bf16/fp32 kernels
    tag = f"{lm.name}|{weights}|{platform.processor() or platform.machine()}|{torch.get_num_threads()}|{context}"
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in tag)[:150]
    return cache_dir() / "cost" / f"{safe}.json"


def verify_cost_curve(lm: LM, sizes: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16), *, context: int = 256,
                      repeats: int = 3, use_cache: bool = True) -> dict[int, float]:
    """Seconds for one forward over n tokens at the given context, for each n in sizes
    (the fastest of `repeats` runs after a warm-up).

    Example:
        >>> import decodelab as dl
        >>> curve = verify_cost_curve(dl.load("tiny-random"), sizes=(1, 4), repeats=1, use_cache=False)
        >>> sorted(curve)
        [1, 4]
    """
    path = _cache_file(lm, context)
    if use_cache and path.exists():
        stored = json.loads(path.read_text())
        if all(str(n) in stored for n in sizes):
            return {n: float(stored[str(n)]) for n in sizes}
    context = min(context, lm.context_length - max(sizes) - 1)
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, lm.vocab_size, (context,), generator=generator).tolist()
    seq = Sequence(lm, [prompt])
    seq.prefill()
    curve: dict[int, float] = {}
    for n in sizes:
        times = []
        for _ in range(repeats + 1):  # the first run warms up kernels for this shape
            tokens = torch.randint(0, lm.vocab_size, (1, n), generator=generator)
            start = time.perf_counter()
            seq.forward(tokens)
            times.append(time.perf_counter() - start)
            seq.rollback(n)
        # the minimum: other processes can only add time, so it is the closest to this hardware's cost
        curve[n] = min(times[1:])
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({str(k): v for k, v in curve.items()}))
    return curve
