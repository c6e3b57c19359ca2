"""Contrastive search (Su, Lan, Wang, Yogatama, Kong & Collier 2022, "A Contrastive Framework for
Neural Text Generation").

At each step the k most probable tokens are candidates; each is scored by
`(1 - penalty_alpha) * p(v | x) - penalty_alpha * max_j cos(h_v, h_j)`, where h_v is the last
hidden state of candidate v appended to the context and h_j those of every earlier token (prompt
included). The highest score wins: model confidence minus a degeneration penalty that keeps the
text from repeating itself. `penalty_alpha=0` is greedy decoding.

Here: one extra forward per step scores the k candidates of every row of the batch at once as a
token tree of k siblings, which is dropped afterwards; the sampler's processors (penalties,
temperature, top-k/p) shape p before the candidates are taken. Deterministic; not a sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..decoding.method import BuildContext, Method, Parts, register
from ..decoding.protocols import Proposal, Verdict
from ..sampling.options import option
from .common import KeepsHiddenStates, RowContext, new_hidden, parts_of, shaped_logits, verdict
from .slot import WITH_CONSTRAINTS


class ContrastiveSearch(KeepsHiddenStates):
    """Verifier of contrastive search (see the module docstring).

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> out = dl.generate(lm, "hello", strategy="contrastive",
        ...                   strategy_options={"penalty_alpha": 0.6, "top_k": 4}, max_new_tokens=4)
    """

    def __init__(self, penalty_alpha: float, top_k: int):
        self.alpha = penalty_alpha
        self.k = top_k
        self.context = RowContext()

    def verify(self, state: Any, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        h, valid = new_hidden(state)
        self.context.append(state, h, valid)
        probs = shaped_logits(state, target_logits[:, 0]).softmax(-1)
        k = min(self.k, probs.shape[-1])
        top_probs, top_ids = probs.topk(k, dim=-1)
        if k == 1 or state.seq.room() < 1:  # one candidate (or no room left for a candidate): top-1
            chosen = torch.zeros(len(top_ids), dtype=torch.long, device=top_ids.device)
        else:
            chosen = self._rank(state, top_probs, top_ids)
        tokens = top_ids.gather(-1, chosen[:, None]).squeeze(-1)
        return verdict(tokens)

    def _rank(self, state: Any, top_probs: torch.Tensor, top_ids: torch.Tensor) -> torch.Tensor:
        seq = state.seq
        seq.forward_tree(top_ids, [-1] * top_ids.shape[1])  # k siblings after the context, every row
        candidates = seq.hidden_states[-1].float()  # [B, k, H]
        seq.keep_tree_path([[] for _ in range(seq.batch_size)])
        context, mask = self.context.padded(state)  # [B, T, H]
        cosine = torch.nn.functional.normalize(candidates, dim=-1) @ torch.nn.functional.normalize(
            context, dim=-1).transpose(1, 2)
        penalty = cosine.masked_fill(~mask[:, None, :], float("-inf")).max(-1).values  # [B, k]
        score = (1 - self.alpha) * top_probs - self.alpha * penalty
        score = score.masked_fill(top_probs <= 0, float("-inf"))  # masked-out tokens never win
        return score.argmax(-1)


@dataclass
class ContrastiveOptions:
    penalty_alpha: float = option(0.6, "weight of the degeneration penalty (0: greedy)", ge=0, le=1)
    top_k: int = option(4, "candidates per step", ge=1, le=64)


def _build(ctx: BuildContext, o: ContrastiveOptions) -> Parts:
    return parts_of(ContrastiveSearch(o.penalty_alpha, o.top_k))


register(Method("contrastive", "strategy", "contrastive search: confidence minus a degeneration penalty",
                "Su et al. 2022, A Contrastive Framework for Neural Text Generation", ContrastiveOptions, _build,
                WITH_CONSTRAINTS, aliases=("contrastive-search",), example={"penalty_alpha": 0.6, "top_k": 3}))
