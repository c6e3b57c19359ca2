"""`lossy-route`: the small model writes, the large model takes the tokens it is unsure of.

Paper: Fu et al. (2025), "R2R: Efficiently Navigating Divergent Reasoning Paths with Small-Large
Model Token Routing". R2R lets a small model generate and routes only the divergence-prone tokens
to the large model, chosen by a trained router. We use the training-free rule the issue asks for
first: the small model's own confidence. Each step the draft proposes up to k tokens (and stops
early below `min_confidence`); the leading drafts whose top draft probability exceeds
`min_confidence` are emitted without the target's check; at the first unsure position the target
writes the token from its own law p (one forward scores all drafts, as in speculative decoding).
When every draft is confident, the last one is emitted as the next token, so the target writes
nothing that step.

Exactness: min_confidence=1 routes every token to the target (a probability never exceeds 1),
which is plain sampling from the target; lowering it lets more unchecked draft tokens through.
`decodelab.lossy.early_exit` reuses this rule with a shallow exit of the target as the drafter.
"""

from __future__ import annotations

import torch

from ..decoding.loop import DecodeState
from .verify import LossyVerifier, Outcome, Step


class ConfidentDrafts(LossyVerifier):
    """Emit the leading drafts whose draft top probability exceeds `min_confidence`."""

    def __init__(self, min_confidence: float):
        super().__init__()
        self.min_confidence = float(min_confidence)

    def confident(self, step: Step) -> torch.Tensor:
        """[B, k] bool: the draft was sure of d_j (valid drafts only)."""
        valid = torch.arange(step.width, device=step.q.device)[None] < step.lengths[:, None]
        return (step.q.max(-1).values > self.min_confidence) & valid

    def decide(self, state: DecodeState, step: Step) -> Outcome:
        batch = step.p.shape[0]
        if not step.width:
            return Outcome([0] * batch, ["target"] * batch)
        leading = self.confident(step).long().cumprod(1).sum(1).tolist()
        accepted, kinds = [], []
        for a, n in zip(leading, step.lengths.tolist()):
            if n and a == n:  # all sure: the last draft is the next token, the target writes nothing
                accepted.append(n - 1)
                kinds.append("draft")
            else:
                accepted.append(a)
                kinds.append("target")
        return Outcome(accepted, kinds)
