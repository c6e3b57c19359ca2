"""The common half of every lossy verifier: the exact test, then a relaxed rule, then flags.

Each step, for a chain of drafts d_1..d_k with draft laws q_j and processed target laws p_j, the
exact test is speculative sampling's (Leviathan et al. 2023; Chen et al. 2023): d_j passes when
u_j < min(1, p_j(d_j) / q_j(d_j)) (greedy: when d_j is the target's argmax). A lossy verifier
decides, per row, how many drafts to accept and how the next token is chosen (`Outcome`); this
module samples that token with the same uniforms and flags every emitted token the exact test
would have rejected (`LossyFlags`).

Next-token kinds: "residual" (after a rejection: norm(max(0, p - q)), as the exact method),
"target" (the target writes it from p at that position: bonus, or a routed token) and "draft"
(the small model's own next draft is emitted unchecked: routing, early exit, thinking).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..decoding.loop import DecodeState
from ..decoding.protocols import Proposal, Verdict
from ..sampling.config import sample_from_probs
from ..speculative.verifiers import RejectionSampling, processed_target
from .flags import LossyFlags


@dataclass
class Step:
    """What a lossy rule reads about one verify step (B rows, k drafts, V tokens)."""

    p: torch.Tensor  # [B, k+1, V] processed target law (greedy: one-hot argmax)
    q: torch.Tensor  # [B, k, V] draft law (deterministic drafts: one-hot)
    drafts: torch.Tensor  # [B, k]
    lengths: torch.Tensor  # [B] valid drafts per row
    uniforms: torch.Tensor  # [B, k+1] float64; column k draws the next token
    exact_ok: torch.Tensor  # [B, k] bool: the exact test passes d_j (valid drafts only)
    greedy: bool

    @property
    def width(self) -> int:
        return int(self.drafts.shape[1])


@dataclass
class Outcome:
    """Per row: drafts accepted, and how the next token is chosen ("residual", "target", "draft")."""

    accepted: list[int]
    kinds: list[str]


def one_hot_argmax(probs: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(probs).scatter(-1, probs.argmax(-1, keepdim=True), 1.0)


def make_step(state: DecodeState, target_logits: torch.Tensor, proposal: Proposal) -> Step:
    """The exact test's view of a step, with one uniform per position from each row's stream."""
    processed = processed_target(state, target_logits, proposal)
    greedy = state.config.greedy
    p = one_hot_argmax(processed) if greedy else processed.softmax(-1)
    batch, k = proposal.tokens.shape
    drafts = proposal.tokens.to(p.device)
    if proposal.draft_probs is None:
        q = torch.zeros(batch, k, p.shape[-1], dtype=p.dtype, device=p.device).scatter(-1, drafts[..., None], 1.0)
    else:
        q = proposal.draft_probs.to(p.device, p.dtype)
    uniforms = torch.stack([torch.rand(k + 1, dtype=torch.float64, generator=state.generators[i])
                            for i in state.active]).to(p.device)
    lengths = proposal.lengths.to(p.device)
    valid = torch.arange(k, device=p.device)[None] < lengths[:, None]
    p_draft = p[:, :k].gather(-1, drafts[..., None]).squeeze(-1)
    q_draft = q.gather(-1, drafts[..., None]).squeeze(-1)
    ratio = torch.where(q_draft > 0, p_draft / q_draft.clamp_min(1e-30), torch.zeros_like(p_draft)).clamp(max=1)
    exact_ok = (uniforms[:, :k] < ratio.double()) & valid
    return Step(p, q, drafts, lengths, uniforms, exact_ok, greedy)


class LossyVerifier:
    """Base class: subclasses implement `decide(state, step) -> Outcome`; `flags` is the observer
    that carries the `lossy` column."""

    def __init__(self) -> None:
        self.flags = LossyFlags()

    def decide(self, state: DecodeState, step: Step) -> Outcome:
        raise NotImplementedError

    def verify(self, state: DecodeState, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        step = make_step(state, target_logits, proposal)
        outcome = self.decide(state, step)
        batch = step.p.shape[0]
        rows = torch.arange(batch, device=step.p.device)
        accepted = torch.tensor(outcome.accepted, dtype=torch.long, device=step.p.device)
        at = accepted.clamp(max=max(step.width - 1, 0))
        law = step.p[rows, accepted]
        residual = torch.tensor([kind == "residual" for kind in outcome.kinds], device=law.device)
        if bool(residual.any()):
            law = torch.where(residual[:, None], RejectionSampling.residual(law, step.q[rows, at]), law)
        next_tokens = sample_from_probs(law, step.uniforms[:, step.width]).cpu()
        sources = []
        for b, (a, kind) in enumerate(zip(outcome.accepted, outcome.kinds)):
            flags = [not bool(step.exact_ok[b, j]) for j in range(a)]
            if kind == "draft":
                next_tokens[b] = int(step.drafts[b, a])
                flags.append(not bool(step.exact_ok[b, a]))
                sources.append("draft")
            else:
                flags.append(False)
                sources.append("correction" if kind == "residual" else
                               "bonus" if a == int(step.lengths[b]) and a > 0 else "target")
            self.flags.add(state, b, flags)
        return Verdict(accepted.cpu(), next_tokens, sources)
