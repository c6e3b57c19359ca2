"""Momentum decoding: greedy at zero resistance; with resistance >= 1 the walk never re-enters a
node of its graph while a new one is among the candidates."""

from __future__ import annotations

import pytest

import decodelab as dl


@pytest.fixture(scope="module")
def lm():
    return dl.load("tiny-random", vocab_size=64, init_std=0.3, seed=3, num_layers=4)


PROMPTS = [[1, 4, 5, 6, 7], [1, 30, 31, 30, 31, 30]]


def test_momentum_without_resistance_is_greedy(lm):
    greedy = [o.token_ids for o in dl.generate(lm, PROMPTS, max_new_tokens=20, temperature=0)]
    got = [o.token_ids for o in dl.generate(lm, PROMPTS, max_new_tokens=20, temperature=0, strategy="momentum",
                                            strategy_options={"penalty_alpha": 0, "top_k": 8})]
    assert got == greedy


def test_with_unit_resistance_no_token_node_is_entered_twice(lm):
    no_eos = {t: -100.0 for t in lm.eos_token_ids}
    greedy = [o.token_ids for o in dl.generate(lm, PROMPTS, max_new_tokens=30, temperature=0, logit_bias=no_eos)]
    assert any(len(set(g)) < len(g) for g in greedy)  # greedy does revisit
    outs = dl.generate(lm, PROMPTS, max_new_tokens=30, temperature=0, logit_bias=no_eos, strategy="momentum",
                       strategy_options={"penalty_alpha": 1.0, "top_k": 64, "ngram": 1})
    for prompt, out in zip(PROMPTS, outs):
        assert len(out.token_ids) == 30
        assert len(set(out.token_ids)) == 30 and not set(out.token_ids) & set(prompt)


def _revisits(context, output, n=3):
    ids = context + output
    return sum(tuple(ids[t - n + 1:t + 1]) in {tuple(ids[i:i + n]) for i in range(t - n + 1)}
               for t in range(len(context), len(ids)))


@pytest.mark.slow
def test_momentum_leaves_the_loop_that_greedy_falls_into(smol):
    prompt = "Repeat forever: red, green, blue, red, green, blue, red, green, blue,"
    greedy = dl.generate(smol, prompt, chat=False, max_new_tokens=24, temperature=0)
    momentum = dl.generate(smol, prompt, chat=False, max_new_tokens=24, temperature=0, strategy="momentum",
                           strategy_options={"penalty_alpha": 1.0, "top_k": 8, "ngram": 3})
    context = greedy.prompt_token_ids
    assert _revisits(context, greedy.token_ids) >= 12  # greedy goes round the loop
    assert _revisits(context, momentum.token_ids) == 0
