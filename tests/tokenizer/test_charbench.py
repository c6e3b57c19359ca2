"""The CharBench-style suite: known answers, exact tokenization features, and scoring."""

from __future__ import annotations

import pytest

import decodelab as dl
from decodelab.tokenizer import char_suite as charbench_module
from decodelab.tokenizer.char_suite import Item, make_items, token_features


def test_items_have_correct_answers():
    words = ["strawberry", "banana", "level", "python"]
    items = make_items(words, ["count", "locate", "spell"], seed=5)
    assert len(items) == 12
    for item in items:
        if item.task == "count":
            assert item.letter in item.word and int(item.answer) == item.word.count(item.letter)
        elif item.task == "locate":
            assert item.word[int(item.answer) - 1] == item.letter and item.letter not in item.word[:int(item.answer) - 1]
        else:
            assert item.answer.replace("-", "") == item.word


def test_majority_baseline():
    from decodelab.tokenizer.char_suite import CharbenchReport

    items = [Item("count", w, "a", a) for w, a in (("aa", "2"), ("ab", "1"), ("ba", "1"), ("ca", "1"))]
    assert CharbenchReport("m", {}, items).majority_baseline("count") == 0.75


def test_checking_answers():
    assert Item("spell", "cat", "", "c-a-t").check("C - A - T")
    assert not Item("spell", "cat", "", "c-a-t").check("c-a-t-s")
    assert Item("count", "carrot", "r", "2").check(" 2 times")
    assert not Item("locate", "carrot", "o", "5").check("4")


def _fast(tok):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok)


def test_token_features_are_exact():
    """A word learnt as one token: 1 token, letters never span tokens; a character-level tokenizer:
    one token per letter, and a repeated letter spans tokens."""
    whole = _fast(dl.tokenizer.train_bpe(['Q: "strawberry"\n'] * 50, 40))
    item = Item("count", "strawberry", "r", "3")
    prompt = item.question()
    assert whole.tokenize(' "strawberry"')  # sanity: the tokenizer works
    f = token_features(whole, prompt, item)
    assert f["word_tokens"] == 1 and f["letter_spans_tokens"] is False
    chars = _fast(dl.tokenizer.train_bpe(["x"], 1))  # no useful merges: one token per byte
    f = token_features(chars, prompt, item)
    assert f["word_tokens"] == len("strawberry") and f["letter_spans_tokens"] is True
    assert f["letter_at_token_start"] is True
    single = Item("count", "strawberry", "s", "1")
    assert token_features(chars, single.question(), single)["letter_spans_tokens"] is False


def test_accuracy_follows_the_answers(monkeypatch):
    """Answers forced right for words before "n" and wrong after: accuracy is exactly that share."""
    lm = dl.load("tiny-random", vocab_size=64)
    by_prompt = {}
    real = charbench_module.make_items

    def spy(words, tasks, seed=0):
        items = real(words, tasks, seed)
        for item in items:
            by_prompt[item.question()] = item.answer if item.word[0] < "n" else "0"
        return items

    monkeypatch.setattr(charbench_module, "answer_prompts",
                        lambda lm, prompts, **kw: [by_prompt.get(p.rsplit("\n\n", 1)[-1], "x") for p in prompts])
    monkeypatch.setattr(charbench_module, "make_items", spy)
    report = dl.tokenizer.charbench(lm, num_words=20, shots=2, progress=False)
    expected = sum(i.word[0] < "n" for i in report.items) / len(report.items)
    assert report.accuracy() == pytest.approx(expected) and 0 < expected < 1
    rows = report.by_feature()
    assert {r["feature"] for r in rows} == {"word_tokens", "frequency", "letter_spans_tokens", "letter_at_token_start"}
    assert sum(r["n"] for r in rows if r["feature"] == "frequency") == len(report.items)


def test_charbench_end_to_end_on_tiny_model():
    lm = dl.load("tiny-random", vocab_size=64)
    report = dl.tokenizer.charbench(lm, num_words=3, tasks="spell,count", progress=False)
    assert [i.task for i in report.items] == ["spell", "count"] * 3
    assert all(i.features["word_tokens"] >= 1 for i in report.items)
    assert set(report.as_dict()["accuracy"]) == {"spell", "count"}


@pytest.mark.parametrize("options,match", [
    ({"num_words": 0}, "num_words"),
    ({"num_words": 1000, "min_length": 12}, "num_words"),
    ({"tasks": "count,sing"}, "tasks"),
    ({"min_length": 9, "max_length": 5}, "min_length"),
    ({"shots": 99}, "shots"),
])
def test_bad_options(options, match):
    lm = dl.load("tiny-random", vocab_size=64)
    with pytest.raises(dl.InvalidOption, match=match):
        dl.tokenizer.charbench(lm, progress=False, **options)
