"""AdaDec: uncertainty-guided adaptive decoding (He, Chen, Xing & Wu 2025, "Towards
Uncertainty-Guided Adaptive Decoding for LLM-based Code Generation").

Greedy decoding, except where the model is unsure: when the entropy of the next-token
distribution exceeds `entropy_threshold` the step pauses, each of the `top_k` candidates is
extended greedily by `lookahead` tokens, and the candidate whose path has the highest mean
log-probability is taken. (The paper learns the threshold per model with a logistic
regression; here it is an option.) The lookahead of every uncertain row of the batch runs in one
forward per step on a fork of the KV cache; only the chosen first token is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..decoding.method import BuildContext, Method, Parts, register
from ..decoding.protocols import Proposal, Verdict
from ..sampling.options import option
from ..sampling.processors import entropy
from .common import choose, parts_of, shaped_logits, verdict
from .lookahead import fork, rollout
from .slot import ALONE


class AdaDec:
    """Verifier of AdaDec (see the module docstring). `pauses` counts the reranked steps per row.

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> out = dl.generate(lm, "hello", strategy="adadec", strategy_options={"entropy_threshold": 0.5},
        ...                   max_new_tokens=4)
    """

    def __init__(self, entropy_threshold: float, top_k: int, lookahead: int):
        self.threshold = entropy_threshold
        self.k = top_k
        self.lookahead = lookahead
        self.pauses: dict[int, list[int]] = {}

    def verify(self, state: Any, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        scores = shaped_logits(state, target_logits[:, 0])
        tokens = choose(state, scores)
        raw = target_logits[:, 0].float().log_softmax(-1)
        unsure = (entropy(raw).squeeze(-1) > self.threshold).nonzero().flatten().tolist()
        if unsure and state.seq.room() > self.lookahead:
            logp = scores.log_softmax(-1)
            k = min(self.k, logp.shape[-1])
            cand_lp, cand = logp[unsure].topk(k, dim=-1)  # [U, k]
            rows = [b for b in unsure for _ in range(k)]
            paths, lps, _ = rollout(fork(state.seq, rows), cand.flatten(), self.lookahead,
                                    lambda lp: lp.argmax(-1))
            first = raw[torch.tensor(rows)].gather(-1, cand.flatten()[:, None])  # the model's own log p
            mean = torch.cat([first, lps], 1).mean(1).view(len(unsure), k)
            mean = mean.masked_fill(~torch.isfinite(cand_lp), float("-inf"))
            best = cand.gather(-1, mean.argmax(-1)[:, None]).squeeze(-1)
            tokens = tokens.clone()
            tokens[torch.tensor(unsure)] = best.to(tokens.device)
            for b in unsure:
                self.pauses.setdefault(state.active[b], []).append(len(state.rows[state.active[b]].output_ids))
        return verdict(tokens)

    def results(self, state: Any, row: int, out: Any) -> None:
        out.results["adadec"] = {"paused_at": self.pauses.get(row, [])}


@dataclass
class AdaDecOptions:
    entropy_threshold: float = option(1.5, "pause and rerank where the entropy (nats) exceeds this", ge=0, le=20)
    top_k: int = option(3, "candidates reranked at a pause", ge=1, le=32)
    lookahead: int = option(4, "greedy tokens after each candidate", ge=0, le=32)


def _build(ctx: BuildContext, o: AdaDecOptions) -> Parts:
    return parts_of(AdaDec(o.entropy_threshold, o.top_k, o.lookahead))


register(Method("adadec", "strategy", "AdaDec: at uncertain steps rerank candidates by a greedy lookahead",
                "He et al. 2025, Towards Uncertainty-Guided Adaptive Decoding for LLM-based Code Generation",
                AdaDecOptions, _build, ALONE, example={"entropy_threshold": 1.0, "top_k": 2, "lookahead": 2}))
