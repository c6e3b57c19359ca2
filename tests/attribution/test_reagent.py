"""ReAGent: a prompt token the model provably cannot see gets no importance; batched = looped."""

from __future__ import annotations

import pytest
import torch

import decodelab as dl
from decodelab.engine.full_forward import full_logits

PROMPT = [1, 14, 5, 22, 9, 17, 6, 11]
OUTPUT = [12, 4, 20]
HIDDEN = 5  # masked from every attention (not the last prompt token, whose own state predicts y_1)
OPTIONS = {"probes": 32, "min_steps": 40, "max_steps": 40, "attribution_seed": 3}


def _lm():
    return dl.load("tiny-random", vocab_size=32, init_std=1.0, seed=1)


@pytest.fixture(scope="module")
def blind():
    """A tiny model whose attention never reads position HIDDEN (its key is masked in every layer)."""
    lm = _lm()

    def hide(module, args, kwargs):
        ids = kwargs["input_ids"]
        mask = kwargs.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask.clone()
        mask[:, HIDDEN] = 0
        kwargs["attention_mask"] = mask
        return args, kwargs

    lm.model.register_forward_pre_hook(hide, with_kwargs=True)
    return lm


def _output_logits(lm, prompt):
    return full_logits(lm, [prompt + OUTPUT], len(OUTPUT) + 1)[0]


def test_the_blind_model_provably_ignores_the_hidden_token(blind):
    base = _output_logits(blind, PROMPT)
    for token in (3, 8, 30):
        changed = list(PROMPT)
        changed[HIDDEN] = token
        assert torch.equal(_output_logits(blind, changed), base)
    other = list(PROMPT)
    other[HIDDEN - 1] = 30  # a visible token does change them (the check has power)
    assert not torch.allclose(_output_logits(blind, other), base)


def _z(a, t, i):
    return a.effect[t][i] / max(a.effect_se[t][i], 1e-12)


def test_hidden_token_gets_no_importance(blind):
    a = dl.attribute(blind, PROMPT, OUTPUT, **OPTIONS)
    for t in range(len(OUTPUT)):
        assert abs(_z(a, t, HIDDEN)) < 4, (t, a.effect[t][HIDDEN], a.effect_se[t][HIDDEN])
    # some visible token matters clearly for some target (the estimator has power here)
    assert max(abs(_z(a, t, i)) for t in range(len(OUTPUT)) for i in a.positions if i != HIDDEN) > 4


def test_negative_control_the_same_token_matters_to_the_seeing_model():
    a = dl.attribute(_lm(), PROMPT, OUTPUT, **OPTIONS)
    assert max(abs(_z(a, t, HIDDEN)) for t in range(len(OUTPUT))) > 10


def test_batched_probes_equal_the_per_replacement_loop():
    lm = _lm()
    options = {"probes": 4, "min_steps": 2, "max_steps": 3, "attribution_seed": 1}
    batched = dl.attribute(lm, PROMPT, OUTPUT, **options)
    looped = dl.attribute(lm, PROMPT, OUTPUT, loop=True, **options)
    assert batched.steps == looped.steps
    assert torch.allclose(torch.tensor(batched.importance), torch.tensor(looped.importance), atol=1e-5)
    assert looped.forwards > batched.forwards


def test_importance_rows_sum_to_one_over_replaceable_tokens_and_special_tokens_are_kept():
    lm = _lm()
    a = dl.attribute(lm, PROMPT, OUTPUT, probes=4, max_steps=3)
    assert a.positions == list(range(1, len(PROMPT)))  # the <bos> at 0 is special
    for row in a.importance:
        assert sum(row) == pytest.approx(1.0, abs=1e-5) and row[0] == 0.0


def test_attribute_generates_when_no_output_is_given_and_rejects_bad_options():
    lm = _lm()
    out = dl.generate(lm, PROMPT, max_new_tokens=3, temperature=0)
    a = dl.attribute(lm, PROMPT, max_new_tokens=3, temperature=0, probes=4, max_steps=2)
    expected = out.token_ids[:-1] if out.token_ids[-1] in lm.eos_token_ids else out.token_ids
    assert a.output_token_ids == expected
    for bad in ({"ratio": 1.5}, {"probes": 0}, {"max_steps": 10**6}, {"no_such": 1}):
        with pytest.raises(dl.InvalidOption):
            dl.attribute(lm, PROMPT, OUTPUT, **bad)
    with pytest.raises(dl.InvalidOption):
        dl.attribute(lm, [1, 2], OUTPUT)  # only special tokens: nothing to replace
