"""Verifiers: accept a prefix of a chain of drafts so that the output law is the target's.

- `GreedyMatch`: accept drafts while each equals the target's processed argmax; emit the
  target's argmax at the first mismatch (or after the last draft, the bonus token).
- `RejectionSampling`: speculative sampling of Leviathan, Kalman & Matias (2023), "Fast
  Inference from Transformers via Speculative Decoding", and Chen et al. (2023), "Accelerating
  Large Language Model Decoding with Speculative Sampling". Draft x_j ~ q_j is accepted with
  probability min(1, p_j(x_j) / q_j(x_j)); at the first rejection the next token is drawn from
  the residual norm(max(0, p_j - q_j)); after k acceptances a bonus token is drawn from p_{k+1}.
  Exact: every emitted token follows the target's processed distribution p. Deterministic
  drafts (prompt lookup) are the case q_j = one-hot(x_j).

Both compare the *processed* target distribution (temperature, top-k/p, typical, penalties
with the history extended along the drafts) with the *processed* draft distribution produced
by the same code path (`DecodeState.process`), which keeps them consistent.
"""

from __future__ import annotations

import torch

from ..decoding.loop import DecodeState
from ..decoding.protocols import Proposal, Verdict
from ..sampling.config import sample_from_probs


def processed_target(state: DecodeState, target_logits: torch.Tensor, proposal: Proposal) -> torch.Tensor:
    """Processed target logits [B, k+1, V]; position j sees the history plus drafts 1..j
    (for trees: plus the path to node j-1), and the constraint's mask there if any."""
    batch, width, vocab = target_logits.shape
    drafts = proposal.tokens if proposal.width else None
    parents = proposal.parents if proposal.is_tree else None
    history = state.history(drafts, parents) if state.needs_history else None
    allowed = state.allowed(drafts, parents)
    processed = state.process(target_logits.reshape(batch * width, vocab), history, allowed)
    return processed.reshape(batch, width, vocab)


class GreedyMatch:
    """Accept the longest prefix of drafts that greedy decoding would have produced."""

    def verify(self, state: DecodeState, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        choice = processed_target(state, target_logits, proposal).argmax(-1)  # [B, k+1]
        k = proposal.width
        positions = torch.arange(k)
        match = (choice[:, :k].cpu() == proposal.tokens.cpu()) & (positions[None] < proposal.lengths[:, None])
        accepted = (match.long().cumprod(1)).sum(1)
        next_tokens = choice.cpu().gather(1, accepted[:, None]).squeeze(1)
        sources = ["bonus" if int(a) == int(n) and n > 0 else ("correction" if n > 0 else "target")
                   for a, n in zip(accepted, proposal.lengths)]
        return Verdict(accepted, next_tokens, sources)


class RejectionSampling:
    """Speculative rejection sampling; exact under any sampler settings (see module docstring)."""

    @staticmethod
    def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """norm(max(0, p - q)) per row: the law of the token after a rejected draft."""
        residual = (p - q).clamp_min(0)
        mass = residual.sum(-1, keepdim=True)
        # mass == 0 only when p == q, where rejection has probability 0: keep p as a guard.
        return torch.where(mass > 0, residual / mass.clamp_min(1e-30), p)

    def verify(self, state: DecodeState, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        if state.config.greedy:
            return GreedyMatch().verify(state, target_logits, proposal)
        p = processed_target(state, target_logits, proposal).softmax(-1)  # [B, k+1, V]
        batch, k = proposal.tokens.shape
        drafts = proposal.tokens.to(p.device)
        p_draft = p[:, :k].gather(-1, drafts[..., None]).squeeze(-1)  # [B, k]
        if proposal.draft_probs is None:
            q_draft = torch.ones_like(p_draft)
        else:
            q_draft = proposal.draft_probs.to(p.device).gather(-1, drafts[..., None]).squeeze(-1)
        ratio = torch.where(q_draft > 0, p_draft / q_draft.clamp_min(1e-30), torch.zeros_like(p_draft)).clamp(max=1)
        uniforms = torch.stack([
            torch.rand(k + 1, dtype=torch.float64, generator=state.generators[i]) for i in state.active
        ]).to(p.device)
        valid = torch.arange(k, device=p.device)[None] < proposal.lengths.to(p.device)[:, None]
        ok = (uniforms[:, :k] < ratio.double()) & valid
        accepted = ok.long().cumprod(1).sum(1)  # [B]
        rows = torch.arange(batch, device=p.device)
        final_p = p[rows, accepted]  # [B, V]: target at the first rejected / bonus position
        rejected = accepted < proposal.lengths.to(p.device)
        if bool(rejected.any()):
            at = accepted.clamp(max=max(k - 1, 0))
            if proposal.draft_probs is None:
                q = torch.zeros_like(final_p).scatter(-1, drafts[rows, at][:, None], 1.0)
            else:
                q = proposal.draft_probs.to(p.device)[rows, at]
            final_p = torch.where(rejected[:, None], self.residual(final_p, q), final_p)
        next_tokens = sample_from_probs(final_p, uniforms[:, k])
        sources = ["correction" if bool(r) else ("bonus" if int(n) > 0 else "target")
                   for r, n in zip(rejected, proposal.lengths)]
        return Verdict(accepted.cpu(), next_tokens.cpu(), sources)
