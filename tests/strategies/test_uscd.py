"""USCD: plain decoding where the model is sure (or alpha is 0); at unsure steps the contrast with
the lame prompt, as a reference implementation with fresh forwards of both contexts computes it."""

from __future__ import annotations

import math

import pytest
import torch
from strategy_helpers import PROMPTS, fresh_logp

import decodelab as dl


@pytest.fixture(scope="module")
def lm(lm2):
    return lm2



def reference_uscd(lm, prompt, lame, alpha, threshold, steps):
    out = []
    for _ in range(steps):
        lp = fresh_logp(lm, prompt + out)
        if float(-(lp.exp() * lp).sum()) > threshold:
            lame_lp = fresh_logp(lm, lame + out)
            head = lp >= lp.max() + math.log(0.1)
            score = torch.where(head, (1 + alpha) * lp - alpha * lame_lp, torch.tensor(-math.inf, dtype=lp.dtype))
            out.append(int(score.argmax()))
        else:
            out.append(int(lp.argmax()))
        if out[-1] in lm.eos_token_ids:
            break
    return out


def _run(lm, **options):
    return dl.generate(lm, PROMPTS, max_new_tokens=10, temperature=0, strategy="uscd", strategy_options=options)


def test_uscd_reduces_to_greedy_without_contrast(lm):
    greedy = [o.token_ids for o in dl.generate(lm, PROMPTS, max_new_tokens=10, temperature=0)]
    assert [o.token_ids for o in _run(lm, alpha=0)] == greedy
    assert [o.token_ids for o in _run(lm, entropy_threshold=20)] == greedy


@pytest.mark.parametrize("lame_prompt", [None, "x y"])
def test_uscd_matches_a_reference_implementation_batched(lm, lame_prompt):
    threshold = 3.0  # about half of the steps of these prompts are unsure
    outs = _run(lm, alpha=1.0, entropy_threshold=threshold, lame_prompt=lame_prompt)
    for prompt, out in zip(PROMPTS, outs):
        lame = lm.encode(lame_prompt) if lame_prompt else prompt[:1]
        assert out.token_ids == reference_uscd(lm, prompt, lame, 1.0, threshold, 10)
    contrasted = [len(o.results["uscd"]["contrasted_at"]) for o in outs]
    assert 0 < sum(contrasted) < sum(len(o.token_ids) for o in outs)
    greedy = [o.token_ids for o in dl.generate(lm, PROMPTS, max_new_tokens=10, temperature=0)]
    assert [o.token_ids for o in outs] != greedy
