"""Incremental detokenisation: deltas join to the full text, partial stop strings are held back
and released when they do not complete, and no delta ends inside a multi-byte character."""

from __future__ import annotations

import pytest

import decodelab as dl
from decodelab.decoding.detokenize import IncrementalText, validate_stop


@pytest.fixture(scope="module")
def char_lm() -> dl.LM:
    return dl.load("tiny-random", vocab_size=64)


def feed(tokenizer, ids, stop=()):
    inc = IncrementalText(tokenizer, stop)
    deltas = [inc.add([t]) for t in ids]
    deltas.append(inc.flush())
    return inc, deltas


def test_deltas_join_to_the_decoded_text(char_lm):
    ids = char_lm.encode("hello there world", chat=False)
    inc, deltas = feed(char_lm.tokenizer, ids)
    assert "".join(deltas) == "hello there world" and not inc.stopped


def test_partial_stop_is_held_back_then_released(char_lm):
    ids = char_lm.encode("hello world", chat=False)
    inc, deltas = feed(char_lm.tokenizer, ids, stop=("lo x",))
    assert "".join(deltas) == "hello world" and not inc.stopped
    # while "lo " could still become "lo x", it was not released
    assert deltas[:7] == ["h", "e", "", "l", "", "", "lo w"]


def test_stop_string_cuts_the_text(char_lm):
    ids = char_lm.encode("hello world", chat=False)
    inc, deltas = feed(char_lm.tokenizer, ids, stop=("o w", "zz"))
    assert "".join(deltas) == "hell" and inc.stopped
    assert inc.add(char_lm.encode("more", chat=False)) == ""  # nothing after a stop


def test_validate_stop_normalises_and_rejects():
    assert validate_stop(None) == ()
    assert validate_stop("a") == ("a",)
    assert validate_stop(["a", b"b"]) == ("a", "b")
    for bad in (b"\xff", "\ud800", "", [None]):
        with pytest.raises(dl.InvalidOption):
            validate_stop(bad)


@pytest.mark.slow
def test_multibyte_characters_are_never_split(smol):
    text = "日本語 café 🎉🚀 naïve"
    ids = smol.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert any("\ufffd" in smol.token_text(t) for t in ids), "the case must split characters over tokens"
    inc, deltas = feed(smol.tokenizer, ids)
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)
