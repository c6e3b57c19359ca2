"""FrugalPrompt compression keeps the top-attributed tokens in order; critical tokens are the
contrastive log-likelihood between two sides."""

from __future__ import annotations

import pytest

import decodelab as dl
from decodelab.attribution.compress import text_span

OPTIONS = {"max_steps": 3, "probes": 8, "attribution_seed": 2}


@pytest.fixture(scope="module")
def lm():
    return dl.load("tiny-random", vocab_size=64, init_std=0.5, seed=2)


def test_compress_keeps_the_most_important_tokens_in_their_order(lm):
    c = dl.compress(lm, "the cat sat on the mat", keep=0.4, output="ok", chat=False, **OPTIONS)
    importance = c.attribution.prompt_importance()
    span = c.attribution.positions
    assert c.kept_tokens == 9 and c.original_tokens == len(span) == 22
    assert c.kept_positions == sorted(c.kept_positions)
    dropped = [i for i in span if i not in c.kept_positions]
    assert min(importance[i] for i in c.kept_positions) >= max(importance[i] for i in dropped)
    ids = lm.encode("the cat sat on the mat", chat=False)
    assert c.text == lm.decode([ids[i] for i in c.kept_positions])


def test_keep_everything_returns_the_prompt(lm):
    c = dl.compress(lm, "the cat", keep=1.0, output="ok", chat=False, **OPTIONS)
    assert c.text == "the cat" and c.kept_tokens == c.original_tokens


def test_chat_prompts_compress_only_the_user_text(lm):
    ids = lm.encode("the cat", chat=True)
    span = text_span(lm, ids, "the cat")
    assert lm.decode([ids[i] for i in span]) == "the cat" and len(span) < len(ids)
    c = dl.compress(lm, "the cat", keep=0.5, output="ok", chat=True, **OPTIONS)
    assert set(c.attribution.positions) == set(span) and c.kept_tokens == 4


def test_compress_bad_input(lm):
    for keep in (0, 1.5, "half", True):
        with pytest.raises(dl.InvalidOption):
            dl.compress(lm, "the cat", keep=keep, output="ok", chat=False)
    with pytest.raises(dl.InvalidPrompt):
        dl.compress(lm, "  ", output="ok")


def test_critical_tokens_are_the_contrastive_log_likelihood(lm):
    prompt, hint, output = [1, 5, 6, 7], [1, 9, 9, 7], [10, 11, 12, 13]
    c = dl.critical_tokens(lm, prompt, output, contrast_prompt=hint, top=2)
    a = dl.score(lm, prompt, output).column("logprob")
    b = dl.score(lm, hint, output).column("logprob")
    assert c.contrast == pytest.approx([x - y for x, y in zip(a, b)], abs=1e-6)
    assert c.critical == sorted(range(4), key=lambda t: -c.contrast[t])[:2]
    same = dl.critical_tokens(lm, prompt, output, contrast_prompt=prompt)
    assert same.contrast == pytest.approx([0.0] * 4, abs=1e-6)  # no contrast, nothing critical
    other = dl.load("tiny-random", vocab_size=64, init_std=0.5, seed=9)
    by_model = dl.critical_tokens(lm, prompt, output, contrast=other, top=4)
    assert by_model.contrast == pytest.approx(
        [x - y for x, y in zip(a, dl.score(other, prompt, output).column("logprob"))], abs=1e-6)
    with pytest.raises(dl.InvalidOption):
        dl.critical_tokens(lm, prompt, output)
    with pytest.raises(dl.InvalidOption):
        dl.critical_tokens(lm, prompt, output, contrast=other, contrast_prompt=hint)
