"""Counterfactual token generation (Gumbel-max SCM): replay, interventions with the same noise,
posterior noise for outside texts, and the exactness of Gumbel-max sampling over keys."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from oracle import chi_square_pvalue, exact_continuations, sample_continuations

import decodelab as dl
from decodelab.strategies import posterior_noise

PROMPTS = [[1, 4, 5, 6, 7], [1, 9, 2], [1, 30, 31]]


@pytest.fixture(scope="module")
def lm():
    return dl.load("tiny-random", vocab_size=64, init_std=0.1, seed=2)


def _gumbel(lm, prompts, key="k", **kw):
    return dl.generate(lm, prompts, max_new_tokens=12, temperature=kw.pop("temperature", 0.9), strategy="gumbel-max",
                       strategy_options={"key": key}, **kw)


def test_no_intervention_reproduces_a_gumbel_max_text_token_for_token(lm):
    for out in _gumbel(lm, PROMPTS, top_k=20):
        again = dl.counterfactual(lm, out)
        assert again.token_ids == out.token_ids
        assert again.results["counterfactual"]["first_change"] is None


def test_an_intervention_changes_only_from_the_forced_position_with_the_same_noise(lm):
    no_eos = {t: -100.0 for t in lm.eos_token_ids}  # long texts; the counterfactual reuses the bias
    outs = _gumbel(lm, PROMPTS, key=7, logit_bias=no_eos)
    for row, out in enumerate(outs):
        position = 4
        token = next(t for t in range(lm.vocab_size) if t != out.token_ids[position] and t not in lm.eos_token_ids)
        cf = dl.counterfactual(lm, out, force={position: token})
        assert cf.token_ids[:position] == out.token_ids[:position]
        assert cf.token_ids[position] == token
        assert cf.results["counterfactual"]["first_change"] == position
        # every later token is the Gumbel-max choice under the new context with the *same* noise
        # (keyed by key, prompt row and position), recomputed here from scratch without a cache
        ids = PROMPTS[row] + cf.token_ids
        noise = dl.KeyedNoise(7)
        for t in range(position + 1, len(cf.token_ids)):
            context = ids[: len(PROMPTS[row]) + t]
            with torch.no_grad():
                logits = lm.model(input_ids=torch.tensor([context])).logits[0, -1].double()
            logits[list(no_eos)] -= 100.0
            logp = (logits / 0.9).log_softmax(-1)
            g = noise.gumbel(torch.tensor([[row, t]]), lm.vocab_size)[0]
            assert cf.token_ids[t] == int((logp + g).argmax()), (row, t)
        assert cf.token_ids != out.token_ids


def test_posterior_noise_reproduces_a_text_sampled_elsewhere(lm):
    for out in dl.generate(lm, PROMPTS[:2], max_new_tokens=10, temperature=0.8, seed=5):
        again = dl.counterfactual(lm, out.token_ids, prompt=out.prompt_token_ids, temperature=0.8, seed=1)
        assert again.token_ids == out.token_ids
        assert again.results["counterfactual"]["noise"] == "posterior"
        cf = dl.counterfactual(lm, out.token_ids, prompt=out.prompt_token_ids, temperature=0.8, seed=1,
                               force={3: 11})
        assert cf.token_ids[:3] == out.token_ids[:3] and cf.token_ids[3] == 11


def _broken_posterior(logprobs, tokens, generator):
    """A plausible bug: the losers' noise is not truncated below the winner's value."""
    g = -torch.log(-torch.log(torch.rand(logprobs.shape, dtype=torch.float64, generator=generator)))
    top = -torch.log(-torch.log(torch.rand(len(tokens), dtype=torch.float64, generator=generator)))
    return g.scatter(-1, tokens[:, None], (top - logprobs.gather(-1, tokens[:, None]).squeeze(-1))[:, None])


def test_posterior_noise_has_the_prior_as_its_marginal_and_the_test_sees_a_bug():
    """Drawing a token from p and then the noise from its posterior must give standard Gumbel noise
    (the prior) in every coordinate; the untruncated variant fails the same test."""
    generator = torch.Generator().manual_seed(0)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    n = 6000
    logprobs = p.log().expand(n, -1)
    tokens = torch.multinomial(p, n, replacement=True, generator=generator)
    good = posterior_noise(logprobs, tokens, generator)
    assert bool(((logprobs + good).argmax(-1) == tokens).all())
    for v in range(4):
        assert scipy.stats.kstest(good[:, v].numpy(), scipy.stats.gumbel_r.cdf).pvalue > 1e-4
    bad = _broken_posterior(logprobs, tokens, generator)
    assert min(scipy.stats.kstest(bad[:, v].numpy(), scipy.stats.gumbel_r.cdf).pvalue for v in range(4)) < 1e-6


def test_gumbel_max_over_keys_samples_the_exact_law():
    peaky = dl.load("tiny-random", vocab_size=16, init_std=0.3, seed=1)
    prompt = [1, 4, 5, 6, 7]
    exact = exact_continuations(peaky, prompt, 2, temperature=0.9, top_k=8)
    control = exact_continuations(peaky, prompt, 2, temperature=1.6, top_k=8)
    # one key; each row of the batch draws the noise of its own row index
    counts = sample_continuations(peaky, prompt, 2, 4000, seed=0, temperature=0.9, top_k=8, strategy="gumbel-max",
                                  strategy_options={"key": "law"})
    assert chi_square_pvalue(counts, exact) > 1e-4
    assert chi_square_pvalue(counts, control) < 1e-6


def test_counterfactual_bad_input(lm):
    out = _gumbel(lm, PROMPTS[0])
    for force in ({-1: 3}, {2: lm.vocab_size}, {"2": 3}, [2, 3]):
        with pytest.raises(dl.InvalidOption, match="force"):
            dl.counterfactual(lm, out, force=force)
    with pytest.raises(dl.InvalidOption, match="temperature"):
        dl.counterfactual(lm, out, temperature=0)
    with pytest.raises(dl.InvalidOption, match="prompt"):
        dl.counterfactual(lm, [3, 4])
    with pytest.raises(dl.InvalidOption, match="key"):
        dl.generate(lm, "ab", temperature=1, strategy="gumbel-max")
    with pytest.raises(dl.InvalidOption, match="probability 0"):
        dl.counterfactual(lm, [int(np.int64(3))] * 4, prompt=[1, 2], temperature=1, top_k=1)
