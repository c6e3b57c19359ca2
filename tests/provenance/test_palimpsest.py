"""Palimpsest: a model trained in Alice's random order (and one fine-tuned from it) is detected; a
model of the same data in another order, and random orders, give uniform p-values; a non-random
order breaks calibration (the negative control)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import corpus, tiny_char_lm
from scipy import stats

import decodelab as dl
from decodelab.provenance.likelihood import text_logprobs
from decodelab.provenance.palimpsest import spearman_permutation_test


@pytest.fixture(scope="module")
def runs():
    texts = corpus(360, seed=5)
    order, other_data = texts[:300], texts[300:]
    shuffled = list(order)
    random.Random(9).shuffle(shuffled)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alice = tiny_char_lm(seed=1)
        dl.provenance.train_on_texts(alice, order, epochs=1, batch_size=4, lr=3e-3)
        other = tiny_char_lm(seed=2)  # same data, another order: independent of Alice's order
        dl.provenance.train_on_texts(other, shuffled, epochs=1, batch_size=4, lr=3e-3)
        derived = tiny_char_lm(seed=1)
        derived.model.load_state_dict(alice.model.state_dict())
        dl.provenance.train_on_texts(derived, other_data, epochs=1, batch_size=4, lr=1e-3)
    finally:
        torch.set_num_threads(threads)
    return order, alice, other, derived


def test_spearman_matches_scipy_and_the_normal_approximation():
    rng = np.random.default_rng(1)
    scores = torch.tensor(rng.normal(size=200) + 0.01 * np.arange(200))
    rho, p = spearman_permutation_test(scores, 20_000, 0)
    assert rho == pytest.approx(stats.spearmanr(np.arange(200), scores.numpy()).statistic)
    assert p == pytest.approx(stats.norm.sf(rho * np.sqrt(199)), abs=0.01)


def test_alices_model_and_a_model_fine_tuned_from_it_are_detected(runs):
    order, alice, other, derived = runs
    assert dl.provenance.palimpsest(alice, order, reference=other, resamples=999).p_value <= 0.01
    assert dl.provenance.palimpsest(derived, order, reference=other, resamples=999).p_value <= 0.01


def test_an_independent_model_is_not_flagged(runs):
    order, alice, other, _ = runs
    result = dl.provenance.palimpsest(other, order, reference=tiny_char_lm(seed=3), resamples=999)
    assert result.p_value > 0.05 and result.rho < 0.1


def test_random_orders_give_uniform_p_values(runs):
    """Orders drawn at random (not the training order) against Alice's model: uniform p-values."""
    order, alice, other, _ = runs
    scores = torch.tensor([float(lp.mean()) for lp in text_logprobs(alice, order)], dtype=torch.float64)
    scores -= torch.tensor([float(lp.mean()) for lp in text_logprobs(other, order)], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    ps = [spearman_permutation_test(scores[torch.randperm(300, generator=gen)], 199, s)[1] for s in range(150)]
    assert stats.kstest(ps, "uniform").pvalue > 1e-3


def test_a_non_random_order_is_caught(runs):
    """Negative control: orders that are mostly sorted by text length are not independent of the
    likelihoods (short texts score differently), so the same uniformity check rejects."""
    order, alice, *_ = runs
    scores = torch.tensor([float(lp.mean()) for lp in text_logprobs(alice, order)], dtype=torch.float64)
    lengths = torch.tensor([len(t) for t in order], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    ps = []
    for s in range(150):
        biased = (lengths + 20 * torch.randn(300, generator=gen)).argsort()
        ps.append(spearman_permutation_test(scores[biased], 199, s)[1])
    assert stats.kstest(ps, "uniform").pvalue < 1e-3


def test_bad_input_is_a_typed_error():
    lm = dl.load("tiny-random", vocab_size=80)
    with pytest.raises(dl.InvalidOption, match="at least 3"):
        dl.provenance.palimpsest(lm, ["a", "b"])
    with pytest.raises(dl.InvalidOption, match="resamples"):
        dl.provenance.palimpsest(lm, ["a", "b", "c"], resamples=0)
    with pytest.raises(dl.InvalidOption, match="reference"):
        dl.provenance.palimpsest(lm, ["a", "b", "c"], reference="not a model")
