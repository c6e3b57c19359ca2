"""The loop's constraint hook: masks apply before the sampler, along drafts, and end rows.

A toy constraint (a fixed set of allowed tokens, complete after a number of tokens) checks the
plumbing every real grammar relies on: the law of constrained sampling is the locally masked
target law, with and without speculative drafts (drafts outside the set are rejected), and a
complete constraint stops the row.
"""

from __future__ import annotations

import pytest
import torch
from oracle import chi_square_pvalue, exact_continuations, sample_continuations

import decodelab as dl
from decodelab.errors import InvalidOption
from decodelab.speculative import DraftModel, PromptLookup

PASS_LEVEL = 1e-4
FAIL_LEVEL = 1e-6
PROMPT = [1, 5, 6, 5, 6, 5]
ALLOWED = [2, 5, 6, 7]  # includes EOS (2) and the prompt-lookup continuation tokens 5, 6


class TokenSetConstraint:
    """Only tokens of a set; complete after `length` tokens (counts what the loop reports)."""

    def __init__(self, vocab_size: int, allowed: list[int], length: int = 100):
        self.mask = torch.zeros(vocab_size, dtype=torch.bool)
        self.mask[allowed] = True
        self.length = length
        self.seen: list[int] = []

    def start(self, state) -> None:
        self.seen = [0] * len(state.active)

    def allowed(self, state, tokens, parents):
        rows = len(state.active) * (1 if tokens is None else tokens.shape[1] + 1)
        return self.mask.expand(rows, -1)

    def advance(self, state, b, token) -> bool:
        self.seen[b] += 1
        return self.seen[b] >= self.length

    def select_rows(self, rows) -> None:
        self.seen = [self.seen[r] for r in rows]


def masked_continuations(lm, prompt, length, allowed, **sampler):
    """Exact law of `length`-token continuations under mask-then-sample."""
    mask = torch.zeros(lm.vocab_size, dtype=torch.bool)
    mask[allowed] = True
    return exact_continuations(lm, prompt, length, logit_mask=mask, **sampler)


@pytest.mark.parametrize("method", ["plain", "prompt-lookup", "draft"])
def test_constrained_sampling_follows_the_masked_law(target, draft, method):
    sampler = {"temperature": 0.9, "top_k": 3}
    exact = masked_continuations(target, PROMPT, 2, ALLOWED, **sampler)
    spec = {"plain": None, "prompt-lookup": PromptLookup(k=2, max_ngram=2), "draft": DraftModel(draft, k=2)}[method]
    counts = sample_continuations(target, PROMPT, 2, 4000, seed=11, speculative=spec,
                                  constraint=TokenSetConstraint(target.vocab_size, ALLOWED), **sampler)
    assert all(t in ALLOWED for seq in counts for t in seq)
    assert chi_square_pvalue(counts, exact) > PASS_LEVEL


def test_unmasked_law_is_detected(target):
    """Negative control: samples without the constraint do not fit the masked law."""
    sampler = {"temperature": 0.9, "top_k": 3}
    exact = masked_continuations(target, PROMPT, 2, ALLOWED, **sampler)
    counts = sample_continuations(target, PROMPT, 2, 4000, seed=11, **sampler)
    assert chi_square_pvalue(counts, exact) < FAIL_LEVEL


def test_complete_constraint_stops_the_row(target):
    outs = dl.generate(target, [PROMPT, PROMPT[:3]], max_new_tokens=20, temperature=0,
                       constraint=TokenSetConstraint(target.vocab_size, [5, 6, 7], length=3),
                       speculative=PromptLookup(k=4))
    for out in outs:
        assert len(out.token_ids) == 3 and out.finish_reason == "stop"
        assert set(out.token_ids) <= {5, 6, 7}


def test_constraint_must_implement_the_protocol(target):
    with pytest.raises(InvalidOption):
        dl.generate(target, PROMPT, max_new_tokens=2, constraint=object())
