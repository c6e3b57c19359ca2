"""Byte-level ensembles of two tiny byte-level BPE models (different weights, one vocabulary
here; the byte level does not look at vocabularies), against brute-force string laws."""

from __future__ import annotations

import math

import pytest
from tinybpe import CONTEXT, string_logprob, tiny_bpe_lm

from decodelab.bytes import ByteLM, Ensemble
from decodelab.errors import InvalidOption


@pytest.fixture(scope="module")
def pair():
    return tiny_bpe_lm(seed=0, init_std=0.3), tiny_bpe_lm(seed=1, init_std=0.3)


def _members(pair):
    return [ByteLM(m, CONTEXT, prune=0, max_hypotheses=None) for m in pair]


def test_mixture_is_the_weighted_sum_of_the_text_laws(pair):
    ens = Ensemble(_members(pair), weights=[0.3, 0.7], mode="mixture")
    for data in [b"ab", b" ab\xc3\xa9", b"bab a"]:
        expected = math.log(0.3 * math.exp(string_logprob(pair[0], data)) + 0.7 * math.exp(string_logprob(pair[1], data)))
        assert ens.logprob(data, end=True) == pytest.approx(expected, abs=2e-5), data


def test_product_laws_sum_to_one_and_differ_from_members(pair):
    members = _members(pair)
    ens = Ensemble(members, mode="product")
    law = ens.next_byte_logprobs(b"ab")
    assert float(law.exp().sum()) == pytest.approx(1.0, abs=1e-9)
    assert float((law.exp() - members[0].next_byte_logprobs(b"ab").exp()).abs().max()) > 1e-3
    assert len(ens.sample(4, seed=0)) <= 4


def test_bad_options(pair):
    with pytest.raises(InvalidOption):
        Ensemble(list(pair), mode="average")  # type: ignore[arg-type]
    with pytest.raises(InvalidOption):
        Ensemble(list(pair), weights=[1.0])
    with pytest.raises(InvalidOption):
        Ensemble([])
