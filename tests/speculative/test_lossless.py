"""Speculative sampling is lossless: continuations follow the target's exact distribution.

Tiny random target/draft pairs with small vocabularies and peaked distributions (large
init_std) make the exact law of 2-token continuations enumerable; samples from each method are
compared with it by chi-square, and deliberately broken verifiers must fail the same test.
"""

from __future__ import annotations

import pytest
from oracle import chi_square_pvalue, exact_continuations, sample_continuations

from decodelab.speculative import DraftModel, LayerSkip, PromptLookup, RejectionSampling

PASS_LEVEL = 1e-4
FAIL_LEVEL = 1e-6
SAMPLES = 4000
PROMPT = [1, 5, 6, 5, 6, 5]


SETTINGS = [
    {"temperature": 1.0},
    {"temperature": 0.7, "top_k": 4},
    {"temperature": 1.3, "top_p": 0.8},
    {"temperature": 1.0, "repetition_penalty": 1.5},
]


def _methods(target, draft):
    return {
        "draft": lambda: DraftModel(draft, k=3),
        "draft-threshold": lambda: DraftModel(draft, k=3, threshold=0.4),
        "prompt-lookup": lambda: PromptLookup(k=2, max_ngram=2),
        "layer-skip": lambda: LayerSkip(target, layers=1, k=2),
    }


CASES = [("draft", s) for s in SETTINGS] + [
    ("prompt-lookup", SETTINGS[0]), ("prompt-lookup", SETTINGS[3]),
    ("draft-threshold", SETTINGS[1]), ("layer-skip", SETTINGS[2]),
]


@pytest.mark.parametrize("method,sampler", CASES,
                         ids=[f"{m}-" + ",".join(f"{k}={v}" for k, v in s.items()) for m, s in CASES])
def test_speculative_sampling_matches_target_distribution(target, draft, method, sampler):
    exact = exact_continuations(target, PROMPT, 2, **sampler)
    spec = _methods(target, draft)[method]()
    counts = sample_continuations(target, PROMPT, 2, SAMPLES, seed=11, speculative=spec, **sampler)
    assert chi_square_pvalue(counts, exact) > PASS_LEVEL


def test_three_token_chains_match_target_distribution(target, draft):
    """Two drafts per verify: the second draft's acceptance depends on the first's."""
    sampler = {"temperature": 0.6, "top_k": 3}
    exact = exact_continuations(target, PROMPT, 3, **sampler)
    counts = sample_continuations(target, PROMPT, 3, SAMPLES, seed=21, speculative=DraftModel(draft, k=2), **sampler)
    assert chi_square_pvalue(counts, exact) > PASS_LEVEL


def test_plain_sampling_matches_target_distribution(target):
    exact = exact_continuations(target, PROMPT, 2, temperature=0.8, top_k=5)
    counts = sample_continuations(target, PROMPT, 2, SAMPLES, seed=5, temperature=0.8, top_k=5)
    assert chi_square_pvalue(counts, exact) > PASS_LEVEL


class ResampleFromTargetOnReject(RejectionSampling):
    """Broken: after a rejection, draws from p instead of the residual max(0, p - q)."""

    @staticmethod
    def residual(p, q):
        return p


class MismatchedDraftProbs(DraftModel):
    """Broken: reports draft probabilities at another temperature than the drafts were drawn at
    (the class of bug of HF's assisted decoding issue #32867)."""

    def propose(self, state, budget):
        proposal = super().propose(state, budget)
        if proposal.draft_probs is not None and proposal.width:
            flat = proposal.draft_probs.clamp_min(0) ** 0.5
            proposal.draft_probs = flat / flat.sum(-1, keepdim=True)
        return proposal


def test_residual_that_ignores_draft_is_detected(target, draft):
    sampler = {"temperature": 1.0}
    exact = exact_continuations(target, PROMPT, 2, **sampler)
    spec = DraftModel(draft, k=3)
    spec.verifier = ResampleFromTargetOnReject()
    counts = sample_continuations(target, PROMPT, 2, SAMPLES, seed=11, speculative=spec, **sampler)
    assert chi_square_pvalue(counts, exact) < FAIL_LEVEL


def test_draft_probabilities_from_other_processing_are_detected(target, draft):
    sampler = {"temperature": 0.7, "top_k": 4}
    exact = exact_continuations(target, PROMPT, 2, **sampler)
    spec = MismatchedDraftProbs(draft, k=3)
    counts = sample_continuations(target, PROMPT, 2, SAMPLES, seed=11, speculative=spec, **sampler)
    assert chi_square_pvalue(counts, exact) < FAIL_LEVEL
