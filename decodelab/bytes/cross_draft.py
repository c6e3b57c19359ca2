"""Drafting across vocabularies: a draft model with its own tokenizer proposes *text*.

Timor et al. (2025), "Accelerating LLM Inference with Lossless Speculative Decoding Algorithms
for Heterogeneous Vocabularies", and Hugging Face's universal assisted generation: the draft
reads the target's context as text (re-tokenized with its own tokenizer), drafts k tokens
greedily (up to its end token), and its text is tokenized with the target's tokenizer; those
target tokens are the proposal. The proposal is a deterministic function of
the context, so its draft law is a point mass: rejection sampling with q = 1 on the proposed
token (as for prompt lookup) accepts token t with probability p(t) and resamples from p without
t, which keeps the target's law exactly at any temperature, and greedy verification matches
plain greedy decoding token for token. The draft keeps its KV cache across proposals: the context
is re-tokenized with the draft's tokenizer at every step (token boundaries near the end may move
as text is added), and only the tokens after the longest prefix it already holds are forwarded.
What is not done: using the draft's byte-level probabilities as q (higher acceptance under
sampling).

Example:
    >>> import decodelab as dl
    >>> target = dl.load("tiny-random", vocab_size=48, seed=0)
    >>> draft = dl.load("tiny-random", vocab_size=40, seed=1)
    >>> out = dl.generate(target, "the cat", speculative=dl.spec.DraftModel(draft, k=3), temperature=0,
    ...                   max_new_tokens=6)
"""

from __future__ import annotations

import torch

from ..decoding.loop import DecodeState
from ..decoding.protocols import Proposal, Verdict
from ..engine.sequence import Sequence
from ..models.lm import LM


class CrossVocabDraft:
    """The proposer behind `dl.spec.DraftModel(draft)` when the draft's tokenizer differs."""

    def __init__(self, draft: LM, k: int):
        self.draft, self.k = draft, k
        self.seq: Sequence | None = None  # the draft's tokens and KV cache, one row per active row
        self.reused_tokens = 0  # draft tokens whose cache entries a proposal did not recompute

    def start(self, state: DecodeState) -> None:
        self.target = state.lm
        self.seq = None

    def propose(self, state: DecodeState, budget: list[int]) -> Proposal:
        rows = len(budget)
        texts = [self.target.decode(state.context(b), skip_special_tokens=False) for b in range(rows)]
        steps = min(self.k, max(budget, default=0))
        drafted = self._draft_texts(texts, steps) if steps > 0 else [""] * rows
        proposals = []
        for b, (text, extra) in enumerate(zip(texts, drafted)):
            ids = self._target_ids(state.context(b), text, extra)[: budget[b]]
            proposals.append(ids)
            state.rows[state.active[b]].stats.draft_forwards += steps
        width = max((len(p) for p in proposals), default=0)
        tokens = torch.zeros(rows, width, dtype=torch.long)
        for b, ids in enumerate(proposals):
            tokens[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return Proposal(tokens, torch.tensor([len(p) for p in proposals], dtype=torch.long))

    def _draft_texts(self, texts: list[str], steps: int) -> list[str]:
        """Greedy draft continuations (as text) of each row's context."""
        tok = self.draft.tokenizer
        rows = [list(tok(t, add_special_tokens=False)["input_ids"]) or [self.draft.pad_token_id] for t in texts]
        logits = self._logits_after(rows)
        seq = self.seq
        out: list[list[int]] = [[] for _ in rows]
        for j in range(steps):
            chosen = logits.argmax(-1)
            for b, t in enumerate(chosen.tolist()):
                out[b].append(t)
            if j + 1 < steps:
                logits = seq.forward(chosen[:, None])[:, -1]
        texts_out = []
        for ids in out:  # the draft's text ends at its first end token
            ends = [i for i, t in enumerate(ids) if t in self.draft.eos_token_ids]
            texts_out.append(self.draft.decode(ids[: ends[0]] if ends else ids, skip_special_tokens=True))
        return texts_out

    def _logits_after(self, rows: list[list[int]]) -> torch.Tensor:
        """The draft's next-token logits [B, V] after each row, forwarding only what the cache lacks.

        Each row keeps its longest common prefix with what the cache holds (at least one token is
        forwarded again, for its logits); rows are rolled back to equal suffix lengths so that one
        chain forward serves the batch. A fresh prefill when a row would keep nothing.
        """
        held = self.seq.ids if self.seq is not None and self.seq.batch_size == len(rows) else None
        if held is not None:
            common = [min(_common_prefix(h, r), len(r) - 1) for h, r in zip(held, rows)]
            width = max(len(r) - c for r, c in zip(rows, common))
            keep = [len(r) - width for r in rows]
            if min(keep) >= 1:
                self.seq.rollback([len(h) - k for h, k in zip(held, keep)])
                self.reused_tokens += sum(keep)
                suffix = torch.tensor([r[k:] for r, k in zip(rows, keep)], dtype=torch.long)
                return self.seq.forward(suffix, last_only=True)[:, -1]
        self.seq = Sequence(self.draft, rows)
        return self.seq.prefill()

    def _target_ids(self, context: list[int], text: str, extra: str) -> list[int]:
        """Target tokens of the drafted text (the last may be a cut word: verification decides)."""
        if not extra:
            return []
        tok = self.target.tokenizer
        whole = list(tok(text + extra, add_special_tokens=False)["input_ids"])
        mine = list(tok(text, add_special_tokens=False)["input_ids"])
        if whole[: len(mine)] == mine:
            new = whole[len(mine):]
        else:  # the boundary moved: propose the drafted text on its own
            new = list(tok(extra, add_special_tokens=False)["input_ids"])
        return [t for t in new if 0 <= t < self.target.vocab_size]

    def accepted(self, state: DecodeState, proposal: Proposal, verdict: Verdict) -> None:
        return None

    def select_rows(self, rows: list[int]) -> None:
        if self.seq is not None:
            self.seq.select_rows(rows)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
