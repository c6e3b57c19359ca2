"""Calibration runs: measure candidate settings of a method on sample prompts and keep the fastest.

A measurement, so it lives with the bench (a face, which may call `generate`), not in the family.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..decoding.generate import generate
from ..models.lm import LM
from ..speculative.layer_skip import LayerSkip


def calibrate_layer_skip(target: LM, prompts: Sequence, *, candidates: Sequence[int] | None = None, k: int = 4,
                         max_new_tokens: int = 32) -> tuple[LayerSkip, dict[int, dict[str, float]]]:
    """Try several LayerSkip depths on `prompts` (greedy) and keep the fastest; returns it and the table
    {layers: {"tokens_per_second", "acceptance"}}.

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", num_layers=4)
        >>> spec, table = calibrate_layer_skip(lm, ["hello"], candidates=[1, 2], max_new_tokens=4)
        >>> sorted(table), spec.layers in table
        ([1, 2], True)
    """
    n = target.num_layers
    candidates = candidates or sorted({max(1, n // 4), max(1, n // 3), max(1, n // 2), max(1, (2 * n) // 3)} - {n})
    table: dict[int, dict[str, float]] = {}
    for layers in candidates:
        spec = LayerSkip(target, layers=layers, k=k)
        tokens = seconds = proposed = accepted = 0.0
        for prompt in prompts:
            start = time.perf_counter()
            out = generate(target, prompt, speculative=spec, max_new_tokens=max_new_tokens, temperature=0,
                           records=False)
            seconds += time.perf_counter() - start
            tokens += out.stats.new_tokens
            proposed += out.stats.proposed
            accepted += out.stats.accepted
        table[layers] = {"tokens_per_second": tokens / seconds,
                         "acceptance": accepted / proposed if proposed else 0.0}
    best = max(table, key=lambda layers: table[layers]["tokens_per_second"])
    return LayerSkip(target, layers=best, k=k), table
