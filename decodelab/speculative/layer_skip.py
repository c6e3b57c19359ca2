"""Self-drafting by layer skipping: the target's first L layers and its own head draft.

Training-free, in the spirit of Kangaroo (Liu et al., 2024, "Kangaroo: Lossless
Self-Speculative Decoding via Double Early Exiting"), SkipDecode (Del Corro et al., 2023) and
S2D / self-speculative decoding (Zhang et al., 2024, "Draft & Verify"): no second model,
the draft is a shallow view of the target sharing its weights (`derive_lm`). The draft keeps
its own cache for its L layers (the target's cache for those layers holds the same values for
accepted tokens, but keeping the two caches separate avoids interleaving partial-depth entries
into the target's cache; the memory cost is L/N of the target's cache).
`calibrate` picks L by measured acceptance and speed on sample prompts.
Exactness comes from the verifier, as for any draft model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..errors import InvalidOption
from ..models.lm import LM
from .derived import derive_lm
from .draft_model import DraftModel


class LayerSkip(DraftModel):
    """Draft with the target's first `layers` layers (or the chosen `layer_ids`).

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", num_layers=4)
        >>> out = dl.generate(lm, "hello", speculative=LayerSkip(lm, layers=2, k=3), max_new_tokens=6)
    """

    def __init__(self, target: LM, layers: int | None = None, k: int = 4, *, layer_ids: list[int] | None = None,
                 threshold: float | None = None, length=None):
        if not isinstance(target, LM):
            raise InvalidOption("LayerSkip needs the target model from decodelab.load()")
        if layers is None and layer_ids is None:
            layers = max(1, target.num_layers // 2)
        if layer_ids is None and (isinstance(layers, bool) or not isinstance(layers, int)
                                  or not 1 <= layers < target.num_layers):
            raise InvalidOption(f"LayerSkip layers must be between 1 and {target.num_layers - 1} "
                                f"(the target has {target.num_layers}), got {layers!r}")
        super().__init__(derive_lm(target, num_layers=layers, layer_ids=layer_ids), k=k, threshold=threshold,
                         length=length, name="layer-skip")
        self.layers = layers if layer_ids is None else len(layer_ids)

    @classmethod
    def calibrate(cls, target: LM, prompts: Sequence, *, candidates: Sequence[int] | None = None, k: int = 4,
                  max_new_tokens: int = 32) -> tuple[LayerSkip, dict[int, dict[str, float]]]:
        """Try several depths on `prompts` (greedy) and keep the fastest; returns it and the table."""
        from ..decoding.generate import generate

        n = target.num_layers
        candidates = candidates or sorted({max(1, n // 4), max(1, n // 3), max(1, n // 2), max(1, (2 * n) // 3)} - {n})
        table: dict[int, dict[str, float]] = {}
        for layers in candidates:
            spec = cls(target, layers=layers, k=k)
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
        return cls(target, layers=best, k=k), table
