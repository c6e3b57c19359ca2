"""Draft-model speculation: a small model with the target's tokenizer drafts k tokens.

Leviathan et al. (2023) and Chen et al. (2023) (see `verifiers`). The draft keeps its own KV
cache in step with the target through rollbacks: after each verify it keeps the accepted
drafts and queues the target's next token to be fed on the next proposal. Drafts are drawn
from the draft's *processed* distribution (same sampler settings and penalties as the target,
through `DecodeState.process`), and those probabilities go to the verifier, so rejection
sampling stays exact under every sampler option.

A draft with another tokenizer drafts text instead (`decodelab.bytes.cross_draft`: re-tokenized
for the target, verified as a deterministic proposal, lossless at any temperature); the tree
methods still need a shared vocabulary.

Draft length: fixed `k`, a confidence `threshold` (stop drafting when the draft's top
probability falls below it; SpecDec++-style, training-free), and/or an adaptive `DraftLength`.
"""

from __future__ import annotations

import torch

from ..decoding.loop import DecodeState
from ..decoding.protocols import Proposal, Verdict
from ..engine.sequence import Sequence
from ..errors import InvalidOption, VocabularyMismatch
from ..models.lm import LM
from ..sampling.config import sample_from_probs
from ..sampling.keyed import key_to_int
from .length import DraftLength


def same_vocabulary(target: LM, draft: LM) -> bool:
    """Whether both models share one tokenizer and logits width."""
    try:
        check_same_vocabulary(target, draft)
    except VocabularyMismatch:
        return False
    return True


def check_same_vocabulary(target: LM, draft: LM) -> None:
    """Raise VocabularyMismatch unless both models share one tokenizer and logits width."""
    if draft.vocab_size != target.vocab_size:
        raise VocabularyMismatch(
            f"draft '{draft.name}' has {draft.vocab_size} logits but target '{target.name}' has "
            f"{target.vocab_size}; this method needs a draft that shares the target's tokenizer (the 'draft' "
            "method drafts across tokenizers)"
        )
    if not target.shares_vocabulary(draft):
        raise VocabularyMismatch(
            f"draft '{draft.name}' and target '{target.name}' have different tokenizers; "
            "this method needs a draft that shares the target's vocabulary (the 'draft' method drafts across "
            "tokenizers)"
        )


class DraftModel:
    """Propose with a smaller model (same tokenizer: a draft chain with its probabilities;
    another tokenizer: drafted text, see `decodelab.bytes.cross_draft`).

    Example:
        >>> import decodelab as dl
        >>> target = dl.load("tiny-random", vocab_size=64, seed=0)
        >>> draft = dl.load("tiny-random", vocab_size=64, seed=1)
        >>> out = dl.generate(target, "hello", speculative=DraftModel(draft, k=4), max_new_tokens=8)
    """

    def __init__(self, draft: LM, k: int = 5, *, threshold: float | None = None,
                 length: DraftLength | None = None, name: str = "draft"):
        if not isinstance(draft, LM):
            raise InvalidOption("DraftModel needs a model from decodelab.load()")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidOption(f"k must be a positive integer, got {k!r}")
        if threshold is not None and not 0 < float(threshold) < 1:
            raise InvalidOption(f"threshold must be in (0, 1), got {threshold}")
        self.draft, self.k, self.threshold, self.length, self.name = draft, k, threshold, length, name
        self.seq: Sequence | None = None
        self.cross = None  # the cross-vocabulary proposer when the tokenizers differ
        self.unfed: list[list[int]] = []
        self.fed_drafts = 0
        self.generators: list[torch.Generator] = []

    def start(self, state: DecodeState) -> None:
        self.cross = None
        if type(self) is not DraftModel:  # trees and trimmed heads verify draft probabilities
            check_same_vocabulary(state.lm, self.draft)
        elif not same_vocabulary(state.lm, self.draft):
            from ..bytes.cross_draft import CrossVocabDraft

            self.cross = CrossVocabDraft(self.draft, self.k)
            self.cross.start(state)
            return
        self.seq = Sequence(self.draft, [state.rows[i].prompt_ids for i in state.active])
        self.last_logits = self.seq.prefill()
        self.unfed = [[] for _ in state.active]
        self.fed_drafts = 0
        self.generators = []
        for i in state.active:
            gen = torch.Generator()
            gen.manual_seed(key_to_int(f"draft/{state.generators[i].initial_seed()}"))
            self.generators.append(gen)
        if self.length is not None:
            self.length.reset(len(state.active))
        for i in state.active:
            state.rows[i].stats.draft_forwards += 1

    def accepted(self, state: DecodeState, proposal: Proposal, verdict: Verdict) -> None:
        if self.cross is not None:
            return self.cross.accepted(state, proposal, verdict)
        assert self.seq is not None
        rollback = []
        for b in range(len(self.unfed)):
            a = int(verdict.accepted[b])
            if proposal.width == 0:
                rollback.append(0)
                self.unfed[b].append(int(verdict.next_tokens[b]))
                continue
            self.unfed[b] = []
            if a <= self.fed_drafts:
                rollback.append(self.fed_drafts - a)
            else:  # every fed draft accepted, plus the last draft, which the draft has not seen
                rollback.append(0)
                self.unfed[b] = proposal.tokens[b, self.fed_drafts : a].tolist()
            self.unfed[b].append(int(verdict.next_tokens[b]))
        self.seq.rollback(rollback)
        if self.length is not None and proposal.width:
            self.length.observe(proposal.lengths.tolist(), verdict.accepted.tolist())

    def _feed_unfed(self) -> int:
        """Forward the tokens the draft has not seen yet; returns the number of forwards.

        Rows must feed the same number of tokens, so short rows re-feed already cached ones. A row
        keeps at least one cached token, so when a short row has too few to re-feed (early in a
        batch with short prompts) the tokens go in several forwards; usually one.
        """
        assert self.seq is not None
        remaining = self.unfed
        self.unfed = [[] for _ in remaining]
        forwards = 0
        while any(remaining):
            width = min(max(len(r) for r in remaining),
                        min(len(ids) - 1 + len(r) for ids, r in zip(self.seq.ids, remaining)))
            refeed = [max(0, width - len(r)) for r in remaining]
            feed = [(self.seq.ids[b][-n:] if n else []) + remaining[b][:width] for b, n in enumerate(refeed)]
            if any(refeed):
                self.seq.rollback(refeed)
            self.last_logits = self.seq.forward(torch.tensor(feed, dtype=torch.long, device=self.draft.device))[:, -1]
            remaining = [r[width:] for r in remaining]
            forwards += 1
        return forwards

    def propose(self, state: DecodeState, budget: list[int]) -> Proposal:
        if self.cross is not None:
            return self.cross.propose(state, budget)
        assert self.seq is not None
        limits = [min(self.k, room) for room in budget]
        if self.length is not None:
            limits = [min(lim, self.length.choose(b)) for b, lim in enumerate(limits)]
        steps = max(limits)
        batch = len(limits)
        if steps == 0:
            # not drafting this step: the unseen tokens wait and are fed in one forward later
            self.fed_drafts = 0
            return Proposal.empty(batch, state.lm.device)
        forwards = self._feed_unfed()
        logits = self.last_logits
        tokens = torch.zeros(batch, steps, dtype=torch.long)
        probs = torch.zeros(batch, steps, self.draft.vocab_size, dtype=torch.float32)
        lengths = torch.tensor(limits, dtype=torch.long)
        base_history = state.history() if state.needs_history else None
        fed = 0
        for j in range(steps):
            history = None
            if base_history is not None:
                history = base_history.extend_along(tokens[:, :j].to(base_history.seen.device))
                history = type(history)(history.seen[j :: j + 1], history.output_counts[j :: j + 1])
            processed = state.process(logits, history)
            q = processed.softmax(-1)
            if self.threshold is not None and j > 0:
                unsure = q.max(-1).values.cpu() < self.threshold
                lengths = torch.where(unsure & (lengths > j), torch.full_like(lengths, j), lengths)
                if bool((lengths <= j).all()):
                    steps = j
                    break
            if state.config.greedy:
                chosen = q.argmax(-1)
            else:
                uniforms = torch.stack([torch.rand((), dtype=torch.float64, generator=g) for g in self.generators])
                chosen = sample_from_probs(q, uniforms)
            tokens[:, j] = chosen.cpu()
            probs[:, j] = q.float().cpu()
            if j + 1 < steps:
                logits = self.last_logits = self.seq.forward(chosen[:, None].to(self.draft.device))[:, -1]
                forwards += 1
                fed += 1
        self.fed_drafts = fed
        for i in state.active:
            state.rows[i].stats.draft_forwards += forwards
        lengths = lengths.clamp(max=steps)
        return Proposal(tokens[:, :steps], lengths, probs[:, :steps])

    def select_rows(self, rows: list[int]) -> None:
        if self.cross is not None:
            return self.cross.select_rows(rows)
        assert self.seq is not None
        self.seq.select_rows(rows)
        self.last_logits = self.last_logits[rows]
        self.unfed = [self.unfed[r] for r in rows]
        self.generators = [self.generators[r] for r in rows]
        if self.length is not None:
            self.length.select_rows(rows)
