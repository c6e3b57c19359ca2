"""Exact token healing (decodelab.bytes.heal) on a tiny byte-level BPE model."""

from __future__ import annotations

from collections import Counter

import pytest
import tinybpe
import torch
from oracle import chi_square_pvalue
from tinybpe import next_byte_law_after, tiny_bpe_lm

import decodelab as dl
from decodelab.bytes import heal, split_prompt
from decodelab.errors import InvalidOption, InvalidPrompt

PROMPT = "bab ab a"
SAMPLES = 3000


@pytest.fixture(scope="module")
def lm():
    return tiny_bpe_lm(seed=1, init_std=0.3)


def _first_byte(text: bytes) -> int:
    return text[0] if text else 256


def test_split_prompt_backs_up_the_last_words(lm):
    context, tail = split_prompt(lm, PROMPT)
    assert tail == b" ab a"
    assert lm.decode(context) == "bab"


def test_healed_first_byte_follows_the_conditional_law(lm):
    context, tail = split_prompt(lm, PROMPT)
    law = next_byte_law_after(lm, context, tail)
    counts = Counter()
    for seed in range(SAMPLES):
        out = heal(lm, PROMPT, max_new_tokens=1, temperature=1.0, seed=seed)
        assert out.context_ids == context and out.backed_up == tail
        counts[_first_byte(out.data)] += 1
    p = chi_square_pvalue(counts, law)
    assert p > 1e-4, f"chi-square p = {p:.3g}"


def test_plain_generation_after_the_split_is_detected(lm):
    """Negative control: generating after the canonical tokens of the prompt (no healing)."""
    context, tail = split_prompt(lm, PROMPT)
    law = next_byte_law_after(lm, context, tail)
    ids = list(lm.tokenizer(PROMPT)["input_ids"])
    outs = dl.generate(lm, [ids] * SAMPLES, max_new_tokens=1, temperature=1.0, seed=0, records=False)
    counts = Counter(_first_byte(tinybpe.BYTES[o.token_ids[0]] or b"") for o in outs)
    p = chi_square_pvalue(counts, law)
    assert p < 1e-6, f"chi-square p = {p:.3g}: the test cannot see the boundary bias"


def test_greedy_healing_takes_the_likeliest_cover(lm):
    out = heal(lm, PROMPT, max_new_tokens=3, temperature=0)
    again = heal(lm, PROMPT, max_new_tokens=3, temperature=0)
    assert out.text == again.text and out.token_ids == again.token_ids
    assert out.text == out.data.decode("utf-8", errors="replace")
    assert b"".join(tinybpe.BYTES[t] or b"" for t in out.token_ids) == out.backed_up + out.data
    assert out.cover_logprob <= 0


def test_bad_input(lm):
    with pytest.raises(InvalidPrompt):
        heal(lm, "")
    with pytest.raises(InvalidOption):
        heal(lm, PROMPT, max_backup_bytes=0)
    with pytest.raises(InvalidOption):
        heal(lm, PROMPT, max_new_tokens=0)
    assert torch.isfinite(torch.tensor(heal(lm, PROMPT, max_new_tokens=1, temperature=0).cover_logprob))
