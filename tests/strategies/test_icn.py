"""In-context navigation: one candidate is plain decoding; each later candidate is what the model
writes with the earlier ones and the navigation text in its context."""

from __future__ import annotations

import pytest
from strategy_helpers import PROMPTS

import decodelab as dl


@pytest.fixture(scope="module")
def lm(lm2):
    return lm2


def _bias(lm):
    return {t: 4.0 for t in lm.eos_token_ids}  # short answers


def test_one_candidate_is_plain_decoding(lm):
    plain = dl.generate(lm, PROMPTS, max_new_tokens=20, temperature=0, logit_bias=_bias(lm))
    icn = dl.generate(lm, PROMPTS, max_new_tokens=20, temperature=0, logit_bias=_bias(lm), strategy="icn",
                      strategy_options={"candidates": 1, "end_at_newline": False})
    assert [o.token_ids for o in icn] == [o.token_ids for o in plain]


def test_each_candidate_continues_the_earlier_ones_and_the_navigation(lm):
    nav = lm.tokenizer.encode("\nAnother, different answer:", add_special_tokens=False)
    eos = next(iter(lm.eos_token_ids))
    outs = dl.generate(lm, PROMPTS, max_new_tokens=60, temperature=0, logit_bias=_bias(lm), strategy="icn",
                       strategy_options={"candidates": 3, "end_at_newline": False})
    for prompt, out in zip(PROMPTS, outs):
        context, want, answers = list(prompt), [], []
        for j in range(3):
            answer = dl.generate(lm, context, max_new_tokens=60, temperature=0, logit_bias=_bias(lm)).token_ids
            answer = [t for t in answer if t != eos]
            answers.append(answer)
            want += answer + (nav if j < 2 else [eos])
            context += answer + nav
        assert out.token_ids == want[:60]
        assert out.results["icn"]["spans"][1][0] == len(answers[0]) + len(nav)
        assert len(out.results["icn"]["candidates"]) == 3
