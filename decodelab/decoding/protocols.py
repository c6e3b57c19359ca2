"""The plug points of the generation loop: a `Proposer` proposes, a `Verifier` accepts.

Plain decoding is the loop with no proposer: each step verifies an empty proposal, which means
sampling one token from the processed target distribution. Speculative methods (see
`decodelab.speculative`) provide both halves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from .loop import DecodeState


@dataclass
class Proposal:
    """Draft tokens per row: `tokens` [B, k] (padded), `lengths` [B] valid drafts per row.

    `draft_probs` [B, k, V] holds the processed draft distributions the tokens were drawn
    from, for verifiers that need them (rejection sampling); None for deterministic drafts.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    draft_probs: torch.Tensor | None = None

    @classmethod
    def empty(cls, batch: int, device: torch.device | str = "cpu") -> Proposal:
        return cls(torch.zeros(batch, 0, dtype=torch.long, device=device), torch.zeros(batch, dtype=torch.long))

    @property
    def width(self) -> int:
        return int(self.tokens.shape[1])


@dataclass
class Verdict:
    """Per row: how many drafts were accepted and the token that follows them."""

    accepted: torch.Tensor  # [B] long
    next_tokens: torch.Tensor  # [B] long
    next_source: list[str]  # "target", "bonus" or "correction" per row


class Proposer(Protocol):
    def start(self, state: DecodeState) -> None:
        """Called once after the target's prefill (e.g. to prefill a draft model)."""

    def propose(self, state: DecodeState, budget: list[int]) -> Proposal:
        """Drafts continuing `state.context(b)` for each active row, at most budget[b] each."""

    def accepted(self, state: DecodeState, proposal: Proposal, verdict: Verdict) -> None:
        """Told what was accepted, to keep any own state (draft KV cache) in sync."""

    def select_rows(self, rows: list[int]) -> None:
        """Keep only these rows (finished rows leave the batch)."""


class Verifier(Protocol):
    def verify(self, state: DecodeState, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        """target_logits [B, k+1, V]: position j scores the token after the j-th draft."""
