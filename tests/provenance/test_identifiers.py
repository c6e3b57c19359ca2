"""Unique identifiers: an inserted identifier is detected; identifiers the model never saw get
uniform p-values (KS over independent identifiers); ranking against another generator is caught."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import decodelab as dl
from decodelab.provenance.identifiers import word_list


def test_identifiers_are_reproducible_draws_of_the_generator():
    a = dl.provenance.make_identifier(kind="words", length=5, seed=3)
    assert a == dl.provenance.make_identifier(kind="words", length=5, seed=3)
    assert len(a.split()) == 5 and set(a.split()) <= set(word_list())
    chars = dl.provenance.make_identifier(kind="chars", length=20, seed=3)
    assert len(chars) == 20 and chars.isalpha() and chars.islower()
    assert len(word_list()) == 2048 and len(set(word_list())) == 2048


def test_insert_puts_the_identifier_at_word_boundaries_in_the_chosen_fraction():
    texts = [f"text number {i} has several words in it" for i in range(20)]
    out, where = dl.provenance.insert(texts, "alpha beta", fraction=0.25, seed=4)
    assert len(where) == 5
    for i, (before, after) in enumerate(zip(texts, out)):
        if i in where:
            assert "alpha beta" in after and after.replace("alpha beta", "").split() == before.split()
        else:
            assert after == before


def test_inserted_identifier_is_detected(trained):
    (result,) = dl.provenance.detect_identifiers(trained.lm, [trained.identifier], kind="words", length=4,
                                                 alternatives=199)
    assert result.p_value == pytest.approx(1 / 200)
    assert result.statistic > result.alternatives_mean


def test_identifiers_never_trained_on_get_uniform_p_values(trained):
    idents = [dl.provenance.make_identifier(kind="words", length=4, seed=1000 + i) for i in range(80)]
    results = dl.provenance.detect_identifiers(trained.lm, idents, kind="words", length=4, alternatives=49)
    p = np.array([r.p_value for r in results])
    assert stats.kstest(p, "uniform").pvalue > 1e-3
    assert stats.binomtest(int((p <= 0.1).sum()), len(p), 0.1).pvalue > 1e-3


def test_ranking_against_another_generator_is_caught(trained):
    """Negative control: identifiers of letters ranked against word passphrases are not exchangeable
    with them; the uniformity check must reject."""
    idents = [dl.provenance.make_identifier(kind="chars", length=12, seed=2000 + i) for i in range(40)]
    results = dl.provenance.detect_identifiers(trained.lm, idents, kind="words", length=2, alternatives=49)
    assert stats.kstest([r.p_value for r in results], "uniform").pvalue < 1e-3


def test_prefix_is_applied_to_all_alike(trained):
    plain = dl.provenance.detect_identifiers(trained.lm, [trained.identifier], kind="words", length=4,
                                             alternatives=20)
    prefixed = dl.provenance.detect_identifiers(trained.lm, [trained.identifier], kind="words", length=4,
                                                alternatives=20, prefix="Return the")
    assert plain[0].statistic != prefixed[0].statistic


def test_bad_input_is_a_typed_error():
    lm = dl.load("tiny-random", vocab_size=80)
    with pytest.raises(dl.InvalidOption, match="identifiers is empty"):
        dl.provenance.detect_identifiers(lm, [])
    with pytest.raises(dl.InvalidOption, match="alternatives"):
        dl.provenance.detect_identifiers(lm, ["a b"], alternatives=0)
    with pytest.raises(dl.InvalidOption, match="length"):
        dl.provenance.make_identifier(length=1000)
    with pytest.raises(dl.InvalidOption, match="kind"):
        dl.provenance.make_identifier(kind="emoji")
    with pytest.raises(dl.InvalidOption, match="fraction"):
        dl.provenance.insert(["a b"], "x", fraction=0)
    with pytest.raises(dl.PromptTooLong):
        dl.provenance.detect_identifiers(lm, ["x" * 600], kind="chars", length=3, alternatives=2)
