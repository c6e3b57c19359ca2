"""Membership inference: p-values uniform for non-members (KS), small for members (power), and a
broken reference set (not exchangeable with the candidates) is caught by the same check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

import decodelab as dl
from decodelab.provenance.mia import icp_contexts, mink_statistic, zlib_statistic
from decodelab.provenance.pvalues import rank_p_values

METHODS = ("loss", "zlib", "mink", "icp")


def test_rank_p_value_is_the_conformal_formula():
    null = torch.tensor([0.0, 1.0, 2.0, 3.0])
    p = rank_p_values(torch.tensor([3.5, 2.0, -1.0]), null).tolist()
    assert p == [pytest.approx(1 / 5), pytest.approx(3 / 5), pytest.approx(1.0)]  # ties count against


def test_rank_p_values_are_exactly_uniform_over_random_splits():
    """A candidate drawn at random from a pool with the reference gets p uniform on {1..n+1}/(n+1)."""
    rng = np.random.default_rng(0)
    pool = torch.tensor(rng.normal(size=100))
    ps = []
    for _ in range(2000):
        j = int(rng.integers(100))
        ps.append(float(rank_p_values(pool[j:j + 1], torch.cat([pool[:j], pool[j + 1:]]))[0]))
    ranks = np.round(np.array(ps) * 100).astype(int)
    assert stats.chisquare(np.bincount(ranks, minlength=101)[1:]).pvalue > 1e-3
    assert np.mean(np.array(ps) <= 0.05) == pytest.approx(0.05, abs=0.015)


def test_statistics_match_their_definitions():
    lp = torch.tensor([-1.0, -4.0, -2.0, -3.0], dtype=torch.float64)
    assert mink_statistic(lp, "x", 0.5) == pytest.approx(-3.5)  # mean of the two lowest
    text = "some text some text"
    import zlib
    assert zlib_statistic(lp, text) == pytest.approx(-2.5 / len(zlib.compress(text.encode())))


def test_icp_probes_are_the_most_similar_and_never_the_text_itself():
    lm = dl.load("tiny-random", vocab_size=80)
    probes = ["the cat sat on the mat", "numbers 123 456", "the cat sat on a hat", "zzz"]
    contexts = icp_contexts(lm, ["the cat sat on the mat"], probes, shots=1)
    assert contexts == ["the cat sat on a hat\n\n"]


@pytest.mark.parametrize("method", METHODS)
def test_non_member_p_values_are_uniform(trained, method):
    """Non-member candidates vs a disjoint non-member reference: the candidate statistics follow the
    reference's law (two-sample KS), so the p-values are uniform; FPR at 0.05 within binomial range."""
    half = len(trained.non_members) // 2
    candidates, reference = trained.non_members[:half], trained.non_members[half:]
    report = dl.provenance.mia(trained.lm, candidates, reference, method=method)
    cand = [r.statistic for r in report.results]
    assert stats.ks_2samp(cand, report.reference_statistics).pvalue > 1e-3
    p = np.array(report.p_values)
    assert stats.binomtest(int((p <= 0.05).sum()), len(p), 0.05).pvalue > 1e-3


@pytest.mark.parametrize("method,min_power", [("loss", 0.5), ("zlib", 0.5), ("mink", 0.5), ("icp", 0.2)])
def test_members_get_small_p_values(trained, method, min_power):
    """Power at 0.05 on the 64 members (measured on this model: about 0.75 / 0.77 / 0.83 / 0.38)."""
    report = dl.provenance.mia(trained.lm, trained.members, trained.non_members, method=method)
    power = float(np.mean(np.array(report.p_values) <= 0.05))
    assert power >= min_power, power


def test_reference_of_another_distribution_is_caught(trained):
    """Negative control: the reference is members (not exchangeable with non-member candidates).
    The same checks as in the null test must reject."""
    candidates = trained.non_members[:150]
    report = dl.provenance.mia(trained.lm, candidates, trained.members, method="loss")
    cand = [r.statistic for r in report.results]
    assert stats.ks_2samp(cand, report.reference_statistics).pvalue < 1e-3


def test_untrained_model_has_no_power(trained):
    """The same members against a model that never saw them: p-values stay uniform."""
    fresh = dl.load("tiny-random", vocab_size=80, seed=0, hidden_size=64, num_layers=2, context_length=512)
    report = dl.provenance.mia(fresh, trained.members, trained.non_members, method="loss")
    assert stats.ks_2samp([r.statistic for r in report.results], report.reference_statistics).pvalue > 1e-3


def test_icp_calibrates_on_the_reference_minus_its_probes(trained):
    report = dl.provenance.mia(trained.lm, trained.members[:4], trained.non_members[:40], method="icp",
                               probe_fraction=0.25)
    assert report.probes == 10 and len(report.reference_statistics) == 30
    assert all(math.isfinite(r.statistic) and 1 / 31 <= r.p_value <= 1 for r in report.results)


def test_bad_input_is_a_typed_error():
    lm = dl.load("tiny-random", vocab_size=80)
    with pytest.raises(dl.InvalidOption, match="candidates is empty"):
        dl.provenance.mia(lm, [], ["a"])
    with pytest.raises(dl.InvalidOption, match="reference is empty"):
        dl.provenance.mia(lm, ["a"], [])
    with pytest.raises(dl.InvalidOption, match="empty"):
        dl.provenance.mia(lm, ["  "], ["a"])
    with pytest.raises(dl.InvalidOption, match="method"):
        dl.provenance.mia(lm, ["a"], ["b"], method="bogus")
    with pytest.raises(dl.InvalidOption, match="k must be"):
        dl.provenance.mia(lm, ["a"], ["b"], method="mink", k=0)
    with pytest.raises(dl.InvalidOption, match="shots"):
        dl.provenance.mia(lm, ["a"], ["b", "c"], method="icp", shots=100)
    with pytest.raises(dl.PromptTooLong, match="context"):
        dl.provenance.mia(lm, ["x" * (lm.context_length + 5)], ["b"])
    with pytest.raises(dl.InvalidOption, match="Unicode"):
        dl.provenance.mia(lm, ["a\udcff"], ["b"])
    with pytest.raises(dl.InvalidOption, match="list of texts"):
        dl.provenance.mia(lm, "a single string", ["b"])


