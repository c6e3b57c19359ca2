"""ByteLM on a tiny byte-level BPE model: exact against brute-force sums over tokenizations.

The brute force (tinybpe.py) enumerates every tokenization / cover encoding of a string and
scores each with fresh forwards of the token model; it shares no code with decodelab.bytes.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from oracle import chi_square_pvalue
from tinybpe import CONTEXT, head_law, prefix_logprob, string_logprob, tiny_bpe_lm

from decodelab.bytes import END, ByteLM
from decodelab.errors import InvalidOption, InvalidPrompt

STRINGS = [b"ab", b"aba", b" ab", b"ab\xc3\xa9", b"aab a", b"b a\xc3\xa9ba", b"\xc3"]


@pytest.fixture(scope="module")
def lm():
    return tiny_bpe_lm(seed=0, init_std=0.3)


@pytest.fixture(scope="module")
def exact(lm):
    return ByteLM(lm, CONTEXT, prune=0, max_hypotheses=None)


def test_next_byte_probabilities_sum_to_one(exact):
    for prefix in [b"", b"a", b"ab", b" ", b"\xc3", b"ab\xc3", b"aab a"]:
        law = exact.next_byte_logprobs(prefix)
        assert law.shape == (257,)
        assert abs(float(law.exp().sum()) - 1) < 1e-9, prefix


def test_string_probability_equals_sum_over_all_tokenizations(lm, exact):
    for data in STRINGS:
        assert exact.logprob(data, end=True) == pytest.approx(string_logprob(lm, data), abs=2e-5), data
        assert exact.logprob(data) == pytest.approx(prefix_logprob(lm, data), abs=2e-5), data


def test_logprob_difference_is_the_chain_of_next_byte_logprobs(exact):
    a, b = b"ab ", b"a\xc3\xa9b"
    chain = sum(float(exact.next_byte_logprobs(a + b[:i])[b[i]]) for i in range(len(b)))
    assert exact.logprob(a + b) - exact.logprob(a) == pytest.approx(chain, abs=1e-9)
    fresh = ByteLM(exact.lm, CONTEXT, prune=0, max_hypotheses=None)  # no cache shared
    assert fresh.logprob(a + b) == pytest.approx(exact.logprob(a + b), abs=1e-9)


def test_impossible_bytes_have_zero_probability(exact):
    law = exact.next_byte_logprobs(b"a")
    assert float(law[ord("z")]) == float("-inf")
    assert float(law[END]) > float("-inf")
    mid_char = exact.next_byte_logprobs(b"\xc3")  # the token law may also leave the character unfinished
    assert float(mid_char[0xA9]) > math.log(0.01)
    with pytest.raises(InvalidPrompt):
        exact.logprob(b"xyz")


def _head_samples(bl: ByteLM, n: int, length: int, seed: int) -> Counter:
    gen = torch.Generator().manual_seed(seed)
    counts: Counter = Counter()
    for _ in range(n):
        text = bl.sample(length, generator=gen)
        counts[(text, len(text) < length)] += 1
    return counts


def test_byte_sampling_matches_the_token_model_string_law(lm, exact):
    law = head_law(lm, 3)
    assert sum(law.values()) == pytest.approx(1.0, abs=1e-9)
    p = chi_square_pvalue(_head_samples(exact, 6000, 3, seed=1), law)
    assert p > 1e-4, f"chi-square p = {p:.3g}"


def test_one_tokenization_only_is_detected(lm):
    """Negative control: keeping only the likeliest tokenization (the tokenization bias of
    sampling a token model after a canonical prompt) changes the byte law visibly."""
    law = head_law(lm, 3)
    broken = ByteLM(lm, CONTEXT, prune=0, max_hypotheses=1)
    p = chi_square_pvalue(_head_samples(broken, 6000, 3, seed=1), law)
    assert p < 1e-6, f"chi-square p = {p:.3g}: the test cannot see the bias"


def test_bad_options_raise_typed_errors(lm):
    with pytest.raises(InvalidOption):
        ByteLM(lm, prune=1.5)
    with pytest.raises(InvalidOption):
        ByteLM(lm, max_hypotheses=0)
    with pytest.raises(InvalidOption):
        ByteLM("not a model")  # type: ignore[arg-type]
    with pytest.raises(InvalidOption):
        ByteLM(lm, CONTEXT).sample(0)
    assert math.isfinite(ByteLM(lm, CONTEXT).logprob(b"ab"))
