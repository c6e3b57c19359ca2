"""Cascades: +inf is the small model alone, -inf the large model alone; in between the deferral
follows the quantile of the small answer's token uncertainties."""

from __future__ import annotations

import math

import pytest
import torch

import decodelab as dl
from decodelab.uncertainty.cascade import deferral_summary

PROMPTS = [[1, 5, 9], [1, 7, 7, 3], [1, 20, 4], [1, 11]]


@pytest.fixture(scope="module")
def pair():
    return (dl.load("tiny-random", vocab_size=32, init_std=0.3, seed=3),
            dl.load("tiny-random", vocab_size=32, init_std=0.3, seed=8))


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 1.0, "seed": 5}])
def test_infinite_thresholds_equal_one_model_alone(pair, sampling):
    small, large = pair
    for threshold, alone in ((math.inf, small), (-math.inf, large)):
        got = dl.cascade(small, large, PROMPTS, threshold=threshold, max_new_tokens=6, **sampling)
        ref = dl.generate(alone, PROMPTS, max_new_tokens=6, **sampling)
        assert [o.token_ids for o in got] == [o.token_ids for o in ref]
        assert all(o.results["cascade"]["deferred"] == (threshold < 0) for o in got)
    assert [o.token_ids for o in dl.generate(small, PROMPTS, max_new_tokens=6, **sampling)] != [
        o.token_ids for o in dl.generate(large, PROMPTS, max_new_tokens=6, **sampling)]  # the test can see a swap


def test_finite_threshold_defers_exactly_the_uncertain_answers(pair):
    small, large = pair
    alone = dl.generate(small, PROMPTS, max_new_tokens=6, temperature=0)
    # the summary is the 0.8-quantile of -logprob, recomputed here from teacher-forced scores
    summaries = []
    for p, out in zip(PROMPTS, alone):
        nll = [-x for x in dl.score(small, p, out.token_ids).column("logprob")]
        summaries.append(float(torch.quantile(torch.tensor(nll, dtype=torch.float64), 0.8)))
        assert deferral_summary(out, "nll", 0.8) == pytest.approx(summaries[-1], abs=1e-4)
    threshold = sorted(summaries)[1] + 1e-3  # two answers at or below, two above
    got = dl.cascade(small, large, PROMPTS, threshold=threshold, max_new_tokens=6, temperature=0)
    large_alone = dl.generate(large, PROMPTS, max_new_tokens=6, temperature=0)
    for s, out, a, b in zip(summaries, got, alone, large_alone):
        assert out.results["cascade"]["deferred"] == (s > threshold)
        assert out.token_ids == (b.token_ids if s > threshold else a.token_ids)
    assert sum(o.results["cascade"]["deferred"] for o in got) == 2


def test_cascade_bad_input(pair):
    small, large = pair
    for bad in ({"threshold": "x"}, {"threshold": float("nan")}, {"threshold": 1, "quantile": 2},
                {"threshold": 1, "uncertainty": "vibes"}, {"threshold": 1, "records": False}):
        with pytest.raises(dl.InvalidOption):
            dl.cascade(small, large, [1, 5], max_new_tokens=2, **bad)
    with pytest.raises(dl.InvalidOption):
        dl.cascade(small, "large", [1, 5], threshold=1)
