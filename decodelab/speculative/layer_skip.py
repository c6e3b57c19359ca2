"""Self-drafting by layer skipping: the target's first L layers and its own head draft.

Training-free, in the spirit of Kangaroo (Liu et al., 2024, "Kangaroo: Lossless
Self-Speculative Decoding via Double Early Exiting"), SkipDecode (Del Corro et al., 2023) and
S2D / self-speculative decoding (Zhang et al., 2024, "Draft & Verify"): no second model,
the draft is a shallow view of the target sharing its weights (`derive_lm`). The draft keeps
its own cache for its L layers (the target's cache for those layers holds the same values for
accepted tokens, but keeping the two caches separate avoids interleaving partial-depth entries
into the target's cache; the memory cost is L/N of the target's cache).
`decodelab.bench.calibrate.calibrate_layer_skip` picks L by measured speed on sample prompts.
Exactness comes from the verifier, as for any draft model.
"""

from __future__ import annotations

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
