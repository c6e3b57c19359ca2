"""Bad input catalogue: every mistake a user can make in generate/stream raises a typed error,
a subclass of `dl.DecodelabError` (never a bare ValueError, TypeError or IndexError)."""

from __future__ import annotations

import pytest

import decodelab as dl

PROMPT = [1, 4, 5, 6, 7]


@pytest.fixture(scope="module")
def short_lm() -> dl.LM:
    return dl.load("tiny-random", vocab_size=16, context_length=32)


def test_error_hierarchy():
    for error in (dl.ModelNotFound, dl.ModelNotInstalled, dl.InvalidOption, dl.InvalidPrompt,
                  dl.PromptTooLong, dl.VocabularyMismatch, dl.InstallError):
        assert issubclass(error, dl.DecodelabError)
    assert issubclass(dl.PromptTooLong, dl.InvalidPrompt)


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t ", [], [[]], ["hello", ""], [PROMPT, []],
                                    [{"role": "user", "content": "  "}], [{"role": "user"}],
                                    [{"role": "user", "content": 5}], [1.5, 2.0], [99], [-1], [PROMPT, [99]],
                                    None, 42, b"hello"])
def test_bad_prompts_raise_invalid_prompt(short_lm, prompt):
    with pytest.raises(dl.InvalidPrompt):
        dl.generate(short_lm, prompt, max_new_tokens=2)


@pytest.mark.parametrize("chat", [False, True])
def test_empty_text_prompt_raises_with_or_without_chat(short_lm, chat):
    with pytest.raises(dl.InvalidPrompt):
        dl.generate(short_lm, " ", max_new_tokens=2, chat=chat)


def test_prompt_longer_than_context_raises_prompt_too_long(short_lm):
    with pytest.raises(dl.PromptTooLong):
        dl.generate(short_lm, [1] + [4] * 40, max_new_tokens=2)
    with pytest.raises(dl.PromptTooLong):
        dl.generate(short_lm, "e" * 40, max_new_tokens=2, chat=False)
    with pytest.raises(dl.PromptTooLong):
        dl.generate(short_lm, [PROMPT, [4] * 32], max_new_tokens=2)
    out = dl.generate(short_lm, [4] * 31, max_new_tokens=5, temperature=0)  # just fits
    assert out.finish_reason in ("length", "stop")


BAD_OPTIONS = {
    "negative temperature": dict(temperature=-0.1),
    "NaN temperature": dict(temperature=float("nan")),
    "infinite temperature": dict(temperature=float("inf")),
    "string temperature": dict(temperature="hot"),
    "bool temperature": dict(temperature=True),
    "top_p zero": dict(top_p=0.0),
    "top_p above one": dict(top_p=1.5),
    "top_p NaN": dict(top_p=float("nan")),
    "top_k negative": dict(top_k=-1),
    "top_k float": dict(top_k=2.5),
    "min_p one": dict(min_p=1.0),
    "min_p negative": dict(min_p=-0.1),
    "typical_p zero": dict(typical_p=0.0),
    "epsilon above one": dict(epsilon_cutoff=1.2),
    "eta negative": dict(eta_cutoff=-0.01),
    "repetition penalty zero": dict(repetition_penalty=0.0),
    "frequency penalty too large": dict(frequency_penalty=3.0),
    "presence penalty too small": dict(presence_penalty=-2.5),
    "logit bias token outside vocabulary": dict(logit_bias={16: 1.0}),
    "logit bias negative token": dict(logit_bias={-1: 1.0}),
    "logit bias non-integer key": dict(logit_bias={"abc": 1.0}),
    "logit bias value too large": dict(logit_bias={3: 500.0}),
    "logit bias NaN value": dict(logit_bias={3: float("nan")}),
    "logit bias not a dict": dict(logit_bias=[3, 1.0]),
    "max_new_tokens zero": dict(max_new_tokens=0),
    "max_new_tokens negative": dict(max_new_tokens=-3),
    "max_new_tokens float": dict(max_new_tokens=2.5),
    "max_new_tokens bool": dict(max_new_tokens=True),
    "max_new_tokens string": dict(max_new_tokens="10"),
    "seed float": dict(seed=1.5),
    "seed string": dict(seed="one"),
    "top_logprobs negative": dict(top_logprobs=-1),
    "stop not UTF-8 bytes": dict(stop=b"\xff"),
    "stop lone surrogate": dict(stop="\ud800"),
    "stop list with lone surrogate": dict(stop=["ok", "a\udfffb"]),
    "stop empty string": dict(stop=""),
    "stop not a string": dict(stop=[5]),
    "unknown option": dict(top_q=0.5),
    "misspelt option": dict(temprature=0.5),
}


@pytest.mark.parametrize("name", list(BAD_OPTIONS))
def test_bad_options_raise_invalid_option(short_lm, name):
    options = {"max_new_tokens": 2, **BAD_OPTIONS[name]}
    with pytest.raises(dl.InvalidOption):
        dl.generate(short_lm, PROMPT, **options)


@pytest.mark.parametrize("name", ["top_p zero", "stop lone surrogate", "unknown option", "max_new_tokens zero"])
def test_stream_validates_like_generate(short_lm, name):
    options = {"max_new_tokens": 2, **BAD_OPTIONS[name]}
    with pytest.raises(dl.InvalidOption):
        list(dl.stream(short_lm, PROMPT, **options))


def test_stream_rejects_a_batch(short_lm):
    with pytest.raises(dl.InvalidPrompt):
        list(dl.stream(short_lm, [PROMPT, PROMPT], max_new_tokens=2))


def test_not_a_model_raises_invalid_option():
    with pytest.raises(dl.InvalidOption):
        dl.generate("tiny-random", PROMPT, max_new_tokens=2)


def test_valid_edge_values_are_accepted(short_lm):
    """The validators are not too strict: boundary values that make sense still work."""
    for options in (dict(top_p=1.0), dict(top_k=0), dict(min_p=0.0), dict(typical_p=1.0),
                    dict(temperature=0), dict(logit_bias={15: -100, 0: 100}), dict(stop=b"ok"),
                    dict(frequency_penalty=-2, presence_penalty=2), dict(seed=0), dict(max_new_tokens=1)):
        out = dl.generate(short_lm, PROMPT, **{"max_new_tokens": 2, **options})
        assert 1 <= len(out.token_ids) <= 2
