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

    A token tree sets `parents` [B, k]: node j's parent (-1 for children of the last emitted
    token), parents before children; a row's valid nodes are its first lengths[b] nodes and
    padding nodes are extra roots. Without `parents` the drafts of a row form one chain.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    draft_probs: torch.Tensor | None = None
    parents: torch.Tensor | None = None

    @classmethod
    def empty(cls, batch: int, device: torch.device | str = "cpu") -> Proposal:
        return cls(torch.zeros(batch, 0, dtype=torch.long, device=device), torch.zeros(batch, dtype=torch.long))

    @property
    def width(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def is_tree(self) -> bool:
        return self.parents is not None and self.width > 0

    def row_parents(self, b: int) -> list[int]:
        """Parent list of row b (a chain when the proposal has no tree)."""
        if self.parents is None:
            return list(range(-1, self.width - 1))
        return [int(x) for x in self.parents[b].tolist()]


@dataclass
class Verdict:
    """Per row: how many drafts were accepted and the token that follows them."""

    accepted: torch.Tensor  # [B] long
    next_tokens: torch.Tensor  # [B] long
    next_source: list[str]  # "target", "bonus" or "correction" per row
    paths: list[list[int]] | None = None  # tree proposals: accepted node indices, root first

    def path(self, b: int) -> list[int]:
        """Accepted draft positions of row b (node indices for trees)."""
        if self.paths is not None:
            return self.paths[b]
        return list(range(int(self.accepted[b])))


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
    """Chooses the tokens of a step. Optional hooks the loop calls when they exist: `start(state)`
    after the prefill, and `before_prefill(state)` before it (e.g. to set
    `state.seq.keep_hidden_states`, for strategies that read hidden states). A proposer may
    define `before_prefill` too."""

    def verify(self, state: DecodeState, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        """target_logits [B, k+1, V]: position 0 scores the first draft; position j+1 scores
        the token after draft j (after node j's root-to-node path for trees)."""


class Constraint(Protocol):
    """Restricts which tokens may come next (grammars): a mask applied before the sampler.

    The loop asks for masks along the drafts being verified and reports accepted tokens, so
    a constraint works with every sampler and every speculative method: a draft token the
    constraint forbids has target probability 0 and is always rejected.
    """

    def start(self, state: DecodeState) -> None:
        """Called once before the first step."""

    def allowed(self, state: DecodeState, tokens: torch.Tensor | None, parents: torch.Tensor | None,
                ) -> torch.Tensor:
        """Bool [B * (k+1), V]: row b*(k+1) + j allows the tokens that may follow the context of
        active row b plus the drafts on the path to node j-1 (chains: drafts 1..j).

        Positions after a forbidden draft are never used; any mask with one True will do there.
        """

    def advance(self, state: DecodeState, b: int, token: int) -> bool:
        """Active row b emitted this token; True when the constraint is complete (the row
        stops there, and later tokens of the same step are dropped)."""

    def select_rows(self, rows: list[int]) -> None:
        """Keep only these rows."""


class Observer(Protocol):
    """Adds columns to the per-token records (uncertainty scores, watermark scores, ...).

    `columns` is called for every emitted token while records are kept, with the raw target
    log-probabilities [V] at that token's position; what it returns lands in `record.extra`.
    An observer may also define `on_step(state, logits, proposal, verdict)`, called once per step
    with the target logits [B, k+1, V] before the tokens are emitted.
    """

    name: str

    def columns(self, state: DecodeState, b: int, logprobs: torch.Tensor, token: int, source: str,
                ) -> dict[str, float]:
        """Columns for the token that active row b emitted."""


class RowPolicy(Protocol):
    """Acts on whole rows: gives each prompt several rows, reorders, duplicates or drops them
    between steps, and turns each prompt's rows into its output (beam search, best-of-n, SMC).

    Optional methods (the loop calls those that exist):

    - `rows_per_prompt: int` — rows each prompt starts with.
    - `before_step(state) -> list[int] | None` — at the start of a step: for each active row b
      the active row whose content it takes (repeats allowed; resampling).
    - `before_emit(state, logits, proposal, verdict) -> list[int] | None` — after the verifier
      chose, before tokens are appended: parents as above; the verdict is already in the new order
      (beam search picks (parent, token) pairs). A row the policy marks finished emits nothing.
    - `outputs(state, outputs) -> list[GenerationOutput]` — one output per prompt from the
      outputs of all rows (rows of prompt p are those with state.groups[row] == p).
    - `streams: bool` — False when rows are not the outputs (their text goes out whole at the end).
    """

    rows_per_prompt: int
