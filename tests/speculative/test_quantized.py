"""Speculative decoding on int4 weights (bfloat16 activations) is lossless with respect to the
model as loaded: greedy equals plain greedy, and sampled continuations follow the int4 model's
exact law (enumerated with its own forward passes)."""

from __future__ import annotations

import pytest
from oracle import chi_square_pvalue, exact_continuations, sample_continuations

import decodelab as dl
from decodelab.engine.quantized_linear import Int4Linear
from decodelab.speculative import DraftModel, PromptLookup

from .cases import PROMPTS
from .test_lossless import FAIL_LEVEL, PASS_LEVEL, PROMPT, SAMPLES, ResampleFromTargetOnReject


@pytest.fixture(scope="module")
def target4():
    lm = dl.load("tiny-random", vocab_size=10, seed=0, init_std=0.25, num_layers=2, weights="int4")
    assert isinstance(lm.model.model.layers[0].mlp.up_proj, Int4Linear)
    return lm


@pytest.fixture(scope="module")
def draft4():
    return dl.load("tiny-random", vocab_size=10, seed=3, init_std=0.25, num_layers=1, weights="int4")


@pytest.fixture(scope="module")
def tiny4():
    return dl.load("tiny-random", vocab_size=48, seed=0, init_std=0.3, num_layers=4, weights="int4")


@pytest.fixture(scope="module")
def tiny_draft4():
    return dl.load("tiny-random", vocab_size=48, seed=7, init_std=0.3, num_layers=1, weights="int4")


@pytest.mark.parametrize("method", ["prompt-lookup", "draft"])
def test_int4_greedy_speculative_equals_plain_greedy(tiny4, tiny_draft4, method):
    spec = PromptLookup(k=4) if method == "prompt-lookup" else DraftModel(tiny_draft4, k=3)
    for prompt in PROMPTS:
        plain = dl.generate(tiny4, prompt, max_new_tokens=24, temperature=0)
        fast = dl.generate(tiny4, prompt, max_new_tokens=24, temperature=0, speculative=spec)
        assert fast.token_ids == plain.token_ids, prompt


def test_int4_speculative_sampling_matches_the_int4_models_distribution(target4, draft4):
    sampler = {"temperature": 1.0}
    exact = exact_continuations(target4, PROMPT, 2, **sampler)
    counts = sample_continuations(target4, PROMPT, 2, SAMPLES, seed=11, speculative=DraftModel(draft4, k=3), **sampler)
    assert chi_square_pvalue(counts, exact) > PASS_LEVEL


def test_int4_broken_residual_is_detected(target4, draft4):
    exact = exact_continuations(target4, PROMPT, 2, temperature=1.0)
    spec = DraftModel(draft4, k=3)
    spec.verifier = ResampleFromTargetOnReject()
    counts = sample_continuations(target4, PROMPT, 2, SAMPLES, seed=11, speculative=spec, temperature=1.0)
    assert chi_square_pvalue(counts, exact) < FAIL_LEVEL


def test_trimmed_int4_head_stays_packed_and_scores_like_the_full_head(tiny4, tiny_draft4):
    import torch

    from decodelab.engine.sequence import Sequence
    from decodelab.speculative import VocabTrim
    from decodelab.speculative.derived import derive_lm

    kept = torch.tensor([0, 3, 5, 8, 13, 21, 34, 40, 47])
    trimmed = derive_lm(tiny4, token_ids=kept)
    assert isinstance(trimmed.model.lm_head.packed_subset, Int4Linear)  # no float copy of the head
    assert trimmed.weights == tiny4.weights and trimmed.dtype == tiny4.dtype
    ids = [1, 2, 3, 4, 5, 6]
    full = Sequence(tiny4, [ids]).prefill().reshape(-1, tiny4.vocab_size)[-1]
    part = Sequence(trimmed, [ids]).prefill().reshape(-1, tiny4.vocab_size)[-1]
    dropped = torch.ones(tiny4.vocab_size, dtype=torch.bool)
    dropped[kept] = False
    assert torch.isneginf(part[dropped]).all() and torch.isfinite(part[kept]).all()
    # the subset is re-encoded at int4 from bf16 rows: close to, not equal to, the full head
    assert (part[kept] - full[kept]).abs().max() <= 0.05 * full.abs().max() + 0.05
    # the trimmed draft is still lossless: greedy equals plain greedy on the int4 target
    spec = VocabTrim(tiny_draft4, token_ids=range(0, 48, 2), k=3)
    for prompt in PROMPTS[:2]:
        plain = dl.generate(tiny4, prompt, max_new_tokens=16, temperature=0)
        assert dl.generate(tiny4, prompt, max_new_tokens=16, temperature=0, speculative=spec).token_ids == plain.token_ids
