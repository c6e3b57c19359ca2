"""Fingerprints: unconditional token forcing finds a planted trigger; the planted (trigger, response)
verifies with the smallest p-value; unplanted responses get uniform p-values."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_char_lm
from scipy import stats

import decodelab as dl
from decodelab.provenance.fingerprint import find_triggers, verify_fingerprint


def test_forcing_every_token_finds_the_planted_trigger(trained):
    """The top forced token is one of the trigger's (any of them leads into the memorised text) and its
    greedy continuation reveals the hidden response."""
    (best, *_) = find_triggers(trained.lm, length=14, top=3)
    assert best.token in trained.trigger
    assert trained.response[:10] in best.continuation


def test_an_untrained_model_shows_no_such_trigger(trained):
    found = find_triggers(tiny_char_lm(seed=0), length=14, top=5)
    assert trained.trigger[0] not in [c.token for c in found]
    assert all(trained.response not in c.continuation for c in found)


def test_forcing_matches_plain_greedy_decoding(trained):
    (one,) = find_triggers(trained.lm, length=6, top=1, token_ids=[20])
    out = dl.generate(trained.lm, dl.provenance.likelihood.start_ids(trained.lm) + [20], max_new_tokens=6,
                      temperature=0)
    assert one.continuation_ids == list(out.token_ids)[:6]


def test_planted_fingerprint_verifies(trained):
    result = verify_fingerprint(trained.lm, trained.trigger, trained.response, kind="chars", alternatives=199)
    assert result.p_value == pytest.approx(1 / 200)


def test_unplanted_responses_get_uniform_p_values(trained):
    ps = [verify_fingerprint(trained.lm, trained.trigger,
                             dl.provenance.make_identifier(kind="chars", length=12, seed=100 + i),
                             kind="chars", alternatives=39, seed=i).p_value for i in range(60)]
    assert stats.kstest(ps, "uniform").pvalue > 1e-3
    assert np.mean(np.array(ps) <= 0.1) < 0.25


def test_bad_input_is_a_typed_error(trained):
    with pytest.raises(dl.InvalidOption, match="length"):
        find_triggers(trained.lm, length=0)
    with pytest.raises(dl.InvalidOption, match="outside"):
        find_triggers(trained.lm, token_ids=[10_000])
    with pytest.raises(dl.InvalidOption, match="trigger"):
        verify_fingerprint(trained.lm, "", "abc")
