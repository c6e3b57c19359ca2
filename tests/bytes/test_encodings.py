"""`encodings`: the top tokenizations of a text, against the brute-force list on a tiny BPE model."""

from __future__ import annotations

import math

import pytest
from tinybpe import CONTEXT, seq_logprob, string_logprob, tiny_bpe_lm, tokenizations

from decodelab.bytes import encodings
from decodelab.errors import InvalidOption, InvalidPrompt


@pytest.fixture(scope="module")
def lm():
    return tiny_bpe_lm(seed=0, init_std=0.3)


def test_top_tokenizations_match_brute_force(lm):
    text = b"aba ab"
    brute = sorted(((seq_logprob(lm, c, then=0), c) for c in tokenizations(text)), reverse=True)
    rows = encodings(lm, text, top=4, context=CONTEXT)
    assert [r["token_ids"] for r in rows] == [c for _, c in brute[:4]]
    for row, (lp, _) in zip(rows, brute):
        assert row["logprob"] == pytest.approx(lp, abs=2e-5)
    total = string_logprob(lm, text)
    assert sum(r["share"] for r in rows) == pytest.approx(sum(math.exp(lp - total) for lp, _ in brute[:4]), abs=1e-4)
    canonical = lm.tokenizer(text.decode())["input_ids"]
    assert [r["canonical"] for r in rows] == [r["token_ids"] == canonical for r in rows]


def test_bad_input(lm):
    with pytest.raises(InvalidOption):
        encodings(lm, "ab", top=0)
    with pytest.raises(InvalidPrompt):
        encodings(lm, "")
