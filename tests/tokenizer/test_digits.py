"""Digit-grouping transforms (Singh & Strouse 2024): exact groupings, generated problems with
known answers, and the accuracy bookkeeping."""

from __future__ import annotations

import re

import pytest

import decodelab as dl
from decodelab.tokenizer import digit_grouping as digits_module
from decodelab.tokenizer.answers import first_integer
from decodelab.tokenizer.digit_grouping import group_digits, problems


@pytest.mark.parametrize("text,l2r,r2l", [
    ("7", "7", "7"),
    ("123", "123", "123"),
    ("1234", "123,4", "1,234"),
    ("123456", "123,456", "123,456"),
    ("1234567", "123,456,7", "1,234,567"),
    ("12345 + 9876543 = ?", "123,45 + 987,654,3 = ?", "12,345 + 9,876,543 = ?"),
])
def test_groupings(text, l2r, r2l):
    assert group_digits(text, "l2r") == l2r
    assert group_digits(text, "r2l") == r2l
    assert group_digits(text, "none") == text


def test_group_sizes_and_round_trip():
    for n in range(1, 25):
        run = "".join(str((7 * i + 3) % 10) for i in range(n))
        left, right = group_digits(run, "l2r").split(","), group_digits(run, "r2l").split(",")
        assert "".join(left) == "".join(right) == run
        assert all(len(g) == 3 for g in left[:-1]) and 1 <= len(left[-1]) <= 3
        assert all(len(g) == 3 for g in right[1:]) and 1 <= len(right[0]) <= 3


def test_unknown_grouping_is_refused():
    with pytest.raises(dl.InvalidOption, match="grouping"):
        group_digits("1234", "middle-out")


def test_problems_have_correct_answers_and_digit_counts():
    ps = problems(200, 2, 6, "subtract", seed=3)
    assert ps == problems(200, 2, 6, "subtract", seed=3)
    for p in ps:
        assert p.answer == p.a - p.b >= 0
        assert all(2 <= len(str(x)) <= 6 for x in (p.a, p.b))
    q = problems(5, 4, 4, "add", seed=0)[0]
    assert first_integer(group_digits(str(q.answer), "r2l")) == q.a + q.b
    assert re.fullmatch(r"Q: [\d,]+ \+ [\d,]+ = \?\nA:", q.question("l2r"))
    with pytest.raises(dl.InvalidOption, match="min_digits"):
        problems(3, 5, 2)


def test_first_integer():
    assert first_integer(" 13,023 apples") == 13023
    assert first_integer("-42") == -42
    assert first_integer("none") is None
    assert first_integer("12 + 30") == 12


def test_accuracy_counts_right_and_wrong_answers(monkeypatch):
    """With answers forced (every other one right), the accuracy is exactly the share right."""
    lm = dl.load("tiny-random", vocab_size=64)

    def fake(lm, prompts, **_):
        out = []
        for k, prompt in enumerate(prompts):
            a, b = (int(x.replace(",", "")) for x in re.findall(r"Q: ([\d,]+) \+ ([\d,]+) = \?\nA:$", prompt)[0])
            out.append(group_digits(str(a + b), "r2l") if k % 2 == 0 else str(a + b + 1))
        return out

    monkeypatch.setattr(digits_module, "answer_prompts", fake)
    report = dl.tokenizer.digits(lm, num_problems=10, progress=False)
    assert report.accuracy == {"none": 0.5, "l2r": 0.5, "r2l": 0.5}
    assert len(report.rows) == 30 and "| r2l | 5/10 |" in report.table()


def test_digits_end_to_end_on_tiny_model():
    lm = dl.load("tiny-random", vocab_size=64)
    report = dl.tokenizer.digits(lm, num_problems=3, groupings="r2l,none", max_digits=5, progress=False)
    assert list(report.accuracy) == ["r2l", "none"] and len(report.rows) == 6
    assert report.tokens_per_operand["r2l"] > report.tokens_per_operand["none"]  # commas are tokens here


@pytest.mark.parametrize("options,match", [
    ({"num_problems": 0}, "num_problems"),
    ({"num_problems": 10**6}, "num_problems"),
    ({"groupings": "l2r,sideways"}, "groupings"),
    ({"groupings": ""}, "groupings"),
    ({"operation": "divide"}, "operation"),
    ({"min_digits": 9, "max_digits": 3}, "min_digits"),
    ({"digits": 3}, "unknown option"),
])
def test_bad_options(options, match):
    lm = dl.load("tiny-random", vocab_size=64)
    with pytest.raises(dl.InvalidOption, match=match):
        dl.tokenizer.digits(lm, progress=False, **options)
