"""Momentum decoding (Lan, Su, Liu, Cai, Wang, Wang & Xu 2022, "Momentum Decoding: Open-ended Text
Generation As Graph Exploration").

The text is a walk on a directed graph whose nodes are its n-grams; degeneration is the walk
going round a circle. Each step takes the top-k candidates and scores each by its probability
minus a resistance when it would re-enter a node already in the graph:
`p(v) - penalty_alpha * d(v)`, where d(v) is 0 for a new node and otherwise the depth of the
circle the walk would be in (1 + the number of nodes just re-entered in a row), so that going
round an existing loop costs more the longer it lasts. The linear resistance is this module's
choice; the paper leaves the resistance function open. `penalty_alpha=0` is greedy decoding;
with `penalty_alpha >= 1` a candidate that re-enters the graph never beats one that does not.

Batched, no extra forward: the score uses the step's logits and each row's token history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..decoding.method import BuildContext, Method, Parts, register
from ..decoding.protocols import Proposal, Verdict
from ..sampling.options import option
from .common import parts_of, shaped_logits, verdict
from .slot import WITH_CONSTRAINTS


def revisit_depth(context: list[int], candidates: list[int], n: int, depth: int) -> list[int]:
    """For each candidate: 0 if context + [candidate] ends in an n-gram not seen before in the
    context, else depth + 1 (the circle's depth after this step).

    Example:
        >>> revisit_depth([1, 2, 3, 1, 2], [3, 4], n=3, depth=1)
        [2, 0]
    """
    seen = {tuple(context[i:i + n]) for i in range(len(context) - n + 1)}
    tail = tuple(context[len(context) - n + 1:]) if n > 1 else ()
    return [depth + 1 if tail + (c,) in seen else 0 for c in candidates]


class MomentumDecoding:
    """Verifier of momentum decoding (see the module docstring).

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> out = dl.generate(lm, "hello", strategy="momentum", max_new_tokens=6)
    """

    def __init__(self, penalty_alpha: float, top_k: int, ngram: int):
        self.alpha = penalty_alpha
        self.k = top_k
        self.n = ngram
        self.depth: dict[int, int] = {}  # row -> depth of the circle the walk is in

    def verify(self, state: Any, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        probs = shaped_logits(state, target_logits[:, 0]).softmax(-1)
        top_probs, top_ids = probs.topk(min(self.k, probs.shape[-1]), dim=-1)
        depths = torch.tensor([revisit_depth(state.context(b), top_ids[b].tolist(), self.n,
                                             self.depth.get(i, 0)) for b, i in enumerate(state.active)],
                              dtype=top_probs.dtype, device=top_probs.device)
        score = (top_probs - self.alpha * depths).masked_fill(top_probs <= 0, float("-inf"))
        chosen = score.argmax(-1)
        for b, i in enumerate(state.active):
            self.depth[i] = int(depths[b, chosen[b]])
        return verdict(top_ids.gather(-1, chosen[:, None]).squeeze(-1))


@dataclass
class MomentumOptions:
    penalty_alpha: float = option(0.5, "resistance per step of circle depth (0: greedy)", ge=0, le=10)
    top_k: int = option(8, "candidates per step", ge=1, le=256)
    ngram: int = option(3, "tokens per graph node (n-gram length)", ge=1, le=16)


def _build(ctx: BuildContext, o: MomentumOptions) -> Parts:
    return parts_of(MomentumDecoding(o.penalty_alpha, o.top_k, o.ngram))


register(Method("momentum", "strategy", "momentum decoding: resistance against re-entering the text's graph",
                "Lan et al. 2022, Momentum Decoding: Open-ended Text Generation As Graph Exploration",
                MomentumOptions, _build, WITH_CONSTRAINTS, example={"penalty_alpha": 0.5, "top_k": 4}))
