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
