"""AWRS and SMC, exact claims by enumeration on tiny-random.

- AWRS draws follow the locally constrained law, and its weight is unbiased for the local
  normaliser Z (the biased "renormalised after rejections" weight is caught by the same test);
- per sequence, exp(log_weight) is unbiased for p(L), the probability of the language;
- SMC with many particles follows the global conditional p(x | x in L), which plain masking
  measurably does not on a constraint built to separate them.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from oracle import chi_square_pvalue, enumerate_laws, total_variation

import decodelab as dl
from decodelab.constrain import awrs_sample, compile_grammar

PASS_LEVEL = 1e-4
FAIL_LEVEL = 1e-6
PROMPT = [1, 4, 5, 6, 7]
REGEX = "(e|t|a)(n|s)?"  # local and global laws differ (total variation ~0.55)


@pytest.fixture(scope="module")
def lm():
    return dl.load("tiny-random", vocab_size=16, init_std=0.3, seed=1)


@pytest.fixture(scope="module")
def laws(lm):
    return enumerate_laws(lm, PROMPT, compile_grammar(lm, regex=REGEX), 3, temperature=1.0)


def z_score(samples, mean):
    samples = np.asarray(samples, dtype=np.float64)
    return (samples.mean() - mean) / (samples.std(ddof=1) / math.sqrt(len(samples)))


P = torch.tensor([0.05, 0.30, 0.10, 0.25, 0.20, 0.10], dtype=torch.float64)
ALLOWED = {0, 2, 5}  # the model's favourites are forbidden: many rejections, Z = 0.25


def draws(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [awrs_sample(P.log(), lambda t: t in ALLOWED, g) for _ in range(n)]


def test_awrs_token_law_is_the_local_law():
    out = draws(20000, 1)
    counts = Counter((d.token,) for d in out)
    z = float(P[list(ALLOWED)].sum())
    law = {(t,): float(P[t]) / z for t in ALLOWED}
    assert chi_square_pvalue(counts, law) > PASS_LEVEL
    assert all(2 <= d.checks <= 2 * len(P) for d in out)


def test_awrs_weight_is_unbiased_for_the_local_normaliser():
    out = draws(20000, 2)
    z = float(P[list(ALLOWED)].sum())
    assert abs(z_score([math.exp(d.log_weight) for d in out], z)) < 4.5


def test_biased_weight_is_detected():
    """Negative control: the mass left after the first round's rejections is not unbiased."""
    out = draws(20000, 2)
    z = float(P[list(ALLOWED)].sum())
    assert abs(z_score([1 - d.rejected_mass_first for d in out], z)) > 8


def test_awrs_generation_follows_the_local_law(lm, laws):
    local, _, p_language, _ = laws
    outs = dl.generate(lm, [PROMPT] * 3000, max_new_tokens=3, seed=5, temperature=1.0, records=False,
                       regex=REGEX, constraint_method="awrs")
    assert all(o.constraint_satisfied for o in outs)
    assert chi_square_pvalue(Counter(tuple(o.token_ids) for o in outs), local) > PASS_LEVEL
    # properly weighted: the mean sequence weight estimates p(L) without bias
    assert abs(z_score([math.exp(o.log_weight) for o in outs], p_language)) < 4.5
    assert all(o.stats.constraint_checks >= 2 * len(o.token_ids) for o in outs)


def smc_runs(lm, runs, particles, seed):
    """SMC in the generation loop: `runs` prompts of one batch, each with its own particles."""
    outs = dl.generate(lm, [PROMPT] * runs, particles=particles, max_new_tokens=3, temperature=1.0, seed=seed,
                       records=False, regex=REGEX)
    return [o.results["smc"] for o in outs]


def joint_estimates(runs, support):
    """Per run, the unnormalised weighted particle measure (1/N) sum_i w_i 1[x_i = x]: unbiased
    for p(x) 1[x in L] (SMC with multinomial resampling and mean weights after resampling)."""
    out = np.zeros((len(runs), len(support)))
    for r, result in enumerate(runs):
        for p in result["particles"]:
            if p["complete"]:
                out[r, support.index(tuple(p["token_ids"]))] += math.exp(p["log_weight"]) / len(result["particles"])
    return out


def assert_per_bin_unbiased(estimates, exact):
    for column, value in zip(estimates.T, exact):
        if value > 0.02 * sum(exact) or column.std() > 0:
            z = z_score(column, value) if column.std() > 0 else (0.0 if value == 0 else float("inf"))
            assert abs(z) < 4.5, (column.mean(), value, z)


def test_smc_weighted_particles_are_unbiased_for_the_global_law(lm, laws):
    """Exact claim: E[(1/N) sum_i w_i 1[x_i = x]] = p(L) p(x | L) for every x, so the weighted
    particles target the global conditional; their total is the marginal likelihood."""
    _, glob, p_language, _ = laws
    support = sorted(glob)
    exact = [p_language * glob[x] for x in support]
    runs = smc_runs(lm, 150, 16, 8)
    estimates = joint_estimates(runs, support)
    assert_per_bin_unbiased(estimates, exact)
    ml = [math.exp(r["log_marginal_likelihood"]) for r in runs]
    assert np.allclose(estimates.sum(1), ml)
    assert abs(z_score(ml, p_language)) < 4.5


def test_local_law_is_detected_by_the_global_test(lm, laws):
    """Negative control: particles from masked (local) sampling, weighted by the exact p(L)
    without SMC's correction, fail the same per-bin test."""
    local, glob, p_language, _ = laws
    support = sorted(glob)
    exact = [p_language * glob[x] for x in support]
    outs = dl.generate(lm, [PROMPT] * 2400, max_new_tokens=3, seed=6, temperature=1.0, records=False, regex=REGEX)
    estimates = np.zeros((150, len(support)))
    for k, o in enumerate(outs):
        estimates[k // 16, support.index(tuple(o.token_ids))] += p_language / 16
    with pytest.raises(AssertionError):
        assert_per_bin_unbiased(estimates, exact)
    assert total_variation(local, glob) > 0.3  # the constraint separates the two laws


def test_smc_with_many_particles_approaches_the_global_law(lm, laws):
    local, glob, _, _ = laws
    (result,) = smc_runs(lm, 1, 3000, 3)
    weights = torch.softmax(torch.tensor([p["log_weight"] for p in result["particles"]]), 0).tolist()
    law: dict = {}
    for p, w in zip(result["particles"], weights):
        law[tuple(p["token_ids"])] = law.get(tuple(p["token_ids"]), 0.0) + w
    assert total_variation(law, glob) < total_variation(local, glob) / 4


def test_smc_output_through_generate(lm):
    out = dl.generate(lm, PROMPT, max_new_tokens=3, seed=1, temperature=1.0, regex=REGEX, particles=16)
    assert out.constraint_satisfied and out.finish_reason == "stop"
    assert len(out.particles) == 16 and math.isfinite(out.log_marginal_likelihood)
    assert out.text in {p["text"] for p in out.particles if p["complete"]}
    assert dl.generate(lm, PROMPT, max_new_tokens=3, seed=1, temperature=1.0, regex=REGEX,
                       particles=16).token_ids == out.token_ids  # seeded: reproducible


def test_smc_in_the_loop_batches_and_honours_stop_strings(lm):
    """SMC runs as a row policy of the ordinary loop: a batch of prompts gives one output each,
    seeded runs repeat, and a stop string ends particles like any other row."""
    outs = dl.generate(lm, [PROMPT, PROMPT[:3]], max_new_tokens=3, seed=4, temperature=1.0, regex=REGEX, particles=8)
    assert len(outs) == 2 and all(len(o.results["smc"]["particles"]) == 8 for o in outs)
    again = dl.generate(lm, [PROMPT, PROMPT[:3]], max_new_tokens=3, seed=4, temperature=1.0, regex=REGEX, particles=8)
    assert [o.token_ids for o in outs] == [o.token_ids for o in again]
    stopped = dl.generate(lm, PROMPT, max_new_tokens=3, seed=2, temperature=1.0, regex=REGEX, particles=16,
                          stop=["n"])
    for p in stopped.results["smc"]["particles"]:
        assert "n" not in p["text"]
        assert p["complete"] == math.isfinite(p["log_weight"])


def test_smc_resamples_inside_the_loop(lm):
    """With ESS threshold 1 every step with unequal weights resamples (rows duplicated by the loop)."""
    out = dl.generate(lm, PROMPT, max_new_tokens=3, seed=3, temperature=1.0, regex=REGEX, particles=16,
                      ess_threshold=1.0)
    assert out.stats.resamples >= 1 and out.results["smc"]["resamples"] == out.stats.resamples
