"""`lossy-early-exit`: tokens written by a shallow exit of the target, exit depth falling with position.

Paper: Del Corro et al. (2023), "SkipDecode: Autoregressive Skip Decoding with Batching and
Caching for Efficient LLM Inference". SkipDecode exits every token at a depth fixed by its
position, non-increasing along the sequence: a later token never needs key/values from layers
that an earlier token skipped, so caching and batching keep working. Here the exit is the target's
first L(t) layers with its own norm and head (`derive_lm`, weights shared), with
L(t) = max_layers - (max_layers - min_layers) * t / max_new_tokens for the t-th generated token
(the step's largest t in a batch). The shallow exit drafts up to k tokens per step; its confident
tokens are emitted unchecked (the `lossy-route` rule, CALM-style confidence), and at the first
unsure one the full model writes the token, in the same forward that fills its cache for the
accepted ones. When the exit depth falls, the exit's cache keeps its first L layers.

Exactness: min_confidence=1 hands every token to the full model (plain sampling); min_confidence=0
is pure SkipDecode (every token but the last of a step's budget comes from the exits).
"""

from __future__ import annotations

from ..decoding.loop import DecodeState
from ..decoding.protocols import Proposal
from ..errors import InvalidOption
from ..models.lm import LM
from ..speculative.derived import derive_lm
from ..speculative.draft_model import DraftModel


def exit_depth(position: int, horizon: int, max_layers: int, min_layers: int) -> int:
    """SkipDecode's linear schedule: the exit depth of the `position`-th generated token (0-based).

    Example:
        >>> [exit_depth(t, 4, 8, 2) for t in range(5)]
        [8, 7, 5, 4, 2]
    """
    if horizon <= 0:
        return max_layers
    fraction = min(1.0, position / horizon)
    return max(min_layers, int(max_layers - (max_layers - min_layers) * fraction + 0.5))


class EarlyExitDraft(DraftModel):
    """Draft with the target's first L(t) layers, L non-increasing along the generation.

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", num_layers=4)
        >>> draft = EarlyExitDraft(lm, max_layers=3, min_layers=1, k=2)
        >>> draft.depth
        3
    """

    def __init__(self, target: LM, max_layers: int, min_layers: int, k: int):
        if not 1 <= min_layers <= max_layers <= target.num_layers:
            raise InvalidOption(f"lossy-early-exit needs 1 <= min_layers <= max_layers <= {target.num_layers} "
                                f"(the target's depth), got min_layers={min_layers}, max_layers={max_layers}")
        self.target = target
        self.max_layers, self.min_layers = max_layers, min_layers
        self.exits: dict[int, LM] = {}
        self.depth = max_layers
        super().__init__(self._exit(max_layers), k=k, name="early-exit")

    def _exit(self, depth: int) -> LM:
        if depth not in self.exits:
            self.exits[depth] = derive_lm(self.target, num_layers=depth)
        return self.exits[depth]

    def start(self, state: DecodeState) -> None:
        self.depth = self.max_layers
        self.draft = self._exit(self.max_layers)
        super().start(state)

    def propose(self, state: DecodeState, budget: list[int]) -> Proposal:
        position = max(len(state.rows[i].output_ids) for i in state.active)
        depth = exit_depth(position, state.max_new_tokens, self.max_layers, self.min_layers)
        if depth < self.depth and self.seq is not None:
            # the shallower exit's layers are the first `depth` of the deeper one: keep their cache
            self.draft = self._exit(depth)
            self.seq.lm = self.draft
            self.seq.cache.layers = self.seq.cache.layers[:depth]
            self.depth = depth
        return super().propose(state, budget)
