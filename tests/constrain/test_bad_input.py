"""Bad input and failure modes: clear errors, marked failures, no hangs."""

from __future__ import annotations

import pytest

import decodelab as dl
from decodelab.constrain import InvalidConstraint, heal_prompt
from decodelab.errors import InvalidOption

PROMPT = [1, 4, 5, 6, 7]


@pytest.fixture(scope="module")
def lm():
    return dl.load("tiny-random", vocab_size=80, init_std=0.3, seed=1)


@pytest.mark.parametrize("options", [
    {"regex": "(a"},
    {"regex": ""},
    {"json_schema": '{"type": '},
    {"json_schema": {"type": "foo"}},
    {"json_schema": [1, 2]},
    {"grammar": "start: undefined_rule"},
    {"regex": "[^\\s\\S]"},  # matches nothing
    {"regex": "\\[x\\]"},  # tiny-random has no "[": no text of its tokens matches
    {"regex": "a", "grammar": 'start: "a"'},
])
def test_invalid_constraints_raise(lm, options):
    with pytest.raises(InvalidConstraint):
        dl.generate(lm, PROMPT, max_new_tokens=2, **options)
    assert issubclass(InvalidConstraint, InvalidOption)


@pytest.mark.parametrize("options", [
    {"particles": 4},  # no grammar
    {"regex": "a+", "constraint_method": "beam"},
    {"regex": "a+", "particles": 0},
    {"regex": "a+", "constraint_method": "awrs", "particles": 3},
    {"regex": "a+", "constraint_method": "awrs", "speculative": "prompt-lookup"},
    {"regex": "a+", "constraint_method": "smc", "temperature": 0},
    {"regex": "a+", "token_healing": "yes"},
    {"regex": "a+", "ess_threshold": 2},
])
def test_bad_options_raise(lm, options):
    with pytest.raises(InvalidOption):
        dl.generate(lm, PROMPT, max_new_tokens=2, **options)


@pytest.mark.parametrize("method", ["mask", "awrs", "smc"])
def test_unsatisfiable_within_max_tokens_is_a_marked_failure(lm, method):
    out = dl.generate(lm, PROMPT, max_new_tokens=3, seed=0, temperature=1.0, regex="[a-z]{10}",
                      constraint_method=method)
    assert out.finish_reason == "length" and out.constraint_satisfied is False
    if method == "smc":
        assert out.log_marginal_likelihood == float("-inf")


def test_no_allowed_token_with_probability_is_a_marked_failure(lm):
    """AWRS targets top-k-then-constrain: with top_k=1 and a forbidden favourite, Z = 0."""
    favourite = dl.generate(lm, PROMPT, max_new_tokens=1, temperature=0).token_ids[0]
    letter = "b" if lm.token_text(favourite) != "b" else "c"
    out = dl.generate(lm, PROMPT, max_new_tokens=3, seed=0, temperature=1.0, top_k=1, regex=letter + "+",
                      constraint_method="awrs")
    assert out.finish_reason == "constraint" and out.constraint_satisfied is False and out.token_ids == []


@pytest.mark.parametrize("method", ["mask", "awrs"])
def test_greedy_constrained_decoding_takes_the_best_allowed_token(lm, method):
    out = dl.generate(lm, PROMPT, max_new_tokens=4, temperature=0, regex="[0-9]{4}", constraint_method=method)
    assert out.constraint_satisfied and len(out.text) == 4 and out.text.isdigit()


def test_token_healing_backs_up_the_boundary_token(lm):
    ids = lm.encode("the answer is ea", chat=False)
    backed, text = heal_prompt(lm, ids)
    assert backed == ids[:-1] and text == "a"
    out = dl.generate(lm, ids, max_new_tokens=4, seed=0, temperature=1.0, regex="(t|st)", token_healing=True)
    # the output re-writes "a" first, then the constrained text; out.text shows only the latter
    assert out.constraint_satisfied and out.text in ("t", "st")
    assert lm.decode(out.token_ids).startswith("a")
    text = "".join(dl.stream(lm, ids, max_new_tokens=4, seed=0, temperature=1.0, regex="(t|st)", token_healing=True))
    assert text == out.text
