"""USCD: uncertainty-aware selective contrastive decoding (Wang, Tang, Huang, Chen, Zhang & Lin
2024, "Mitigating Noise in Code Generation: Uncertainty-aware Selective Contrastive Decoding").

A "lame" prompt (the task without the information that matters; here `lame_prompt`, by default
nothing but the prompt's first token) gives the model's noise: what it would write anyway. Where
the model is unsure (entropy of the next-token distribution above `entropy_threshold`), the
step contrasts the two: `(1 + alpha) log p(v | prompt) - alpha log p(v | lame)`, over the tokens
the real prompt finds plausible (`p >= 0.1 * max p`); elsewhere it decodes as usual.

The lame rows (lame prompt + the text generated so far) live in a second KV cache, batched like the
real ones, and catch up only at unsure steps (one forward over the tokens since the last catch-up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..decoding.method import BuildContext, Method, Parts, register
from ..decoding.protocols import Proposal, Verdict
from ..engine.sequence import Sequence
from ..sampling.options import option
from ..sampling.processors import entropy
from .common import choose, parts_of, shaped_logits, verdict
from .slot import WITH_CONSTRAINTS

RELATIVE_TOP = 0.1


class SelectiveContrast:
    """Verifier of USCD (see the module docstring).

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> out = dl.generate(lm, "hello", strategy="uscd", strategy_options={"entropy_threshold": 0.5},
        ...                   max_new_tokens=4)
    """

    def __init__(self, alpha: float, entropy_threshold: float, lame_ids: list[int] | None):
        self.alpha = alpha
        self.threshold = entropy_threshold
        self.lame_ids = lame_ids
        self.lame: Sequence | None = None
        self.rows: list[int] = []  # row index of each lame batch row
        self.fed = 0  # output tokens already in the lame cache (all rows advance together)
        self.last: torch.Tensor | None = None  # lame logits after the fed tokens [rows, V]
        self.contrasted: dict[int, list[int]] = {}

    def start(self, state: Any) -> None:
        self.rows = list(state.active)

    def _lame_logits(self, state: Any) -> torch.Tensor:
        if self.lame is None:
            prompts = [self.lame_ids or state.rows[i].prompt_ids[:1] for i in self.rows]
            self.lame = Sequence(state.lm, prompts)
            self.last = self.lame.prefill()
        if self.rows != list(state.active):  # finished rows left the batch
            keep = [self.rows.index(i) for i in state.active]
            self.lame.select_rows(keep)
            self.last = self.last[keep]
            self.rows = list(state.active)
        done = len(state.rows[state.active[0]].output_ids)
        if done > self.fed:
            new = [state.rows[i].output_ids[self.fed:done] for i in state.active]
            self.last = self.lame.forward(new)[:, -1]
            self.fed = done
        return self.last

    def verify(self, state: Any, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        logits = target_logits[:, 0].float()
        scores = shaped_logits(state, logits)
        raw = logits.log_softmax(-1)
        unsure = entropy(raw).squeeze(-1) > self.threshold
        if bool(unsure.any()) and self.alpha > 0:
            lame = self._lame_logits(state).float().log_softmax(-1)
            head = raw >= raw.max(-1, keepdim=True).values + math.log(RELATIVE_TOP)
            contrast = ((1 + self.alpha) * raw - self.alpha * lame).masked_fill(~head, float("-inf"))
            scores = torch.where(unsure[:, None], shaped_logits(state, contrast), scores)
            for b in unsure.nonzero().flatten().tolist():
                i = state.active[b]
                self.contrasted.setdefault(i, []).append(len(state.rows[i].output_ids))
        return verdict(choose(state, scores, tie_break=raw))

    def results(self, state: Any, row: int, out: Any) -> None:
        out.results["uscd"] = {"contrasted_at": self.contrasted.get(row, [])}


@dataclass
class USCDOptions:
    alpha: float = option(0.5, "weight of the contrast with the lame prompt (0: off)", ge=0, le=10)
    entropy_threshold: float = option(1.0, "contrast only where the entropy (nats) exceeds this", ge=0, le=20)
    lame_prompt: str | None = option(None, "the lame prompt (default: the prompt's first token alone)",
                                     max_length=8192)


def _build(ctx: BuildContext, o: USCDOptions) -> Parts:
    lame = ctx.lm.encode(o.lame_prompt) if o.lame_prompt else None
    return parts_of(SelectiveContrast(o.alpha, o.entropy_threshold, lame))


register(Method("uscd", "strategy", "USCD: contrast with a lame prompt where the model is unsure",
                "Wang et al. 2024, Mitigating Noise in Code Generation: Uncertainty-aware Selective Contrastive "
                "Decoding", USCDOptions, _build, WITH_CONSTRAINTS,
                example={"alpha": 0.5, "entropy_threshold": 1.0}))
