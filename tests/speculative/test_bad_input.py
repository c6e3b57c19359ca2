"""Speculative options reject nonsense with typed errors."""

from __future__ import annotations

import pytest

import decodelab as dl
from decodelab.speculative import DraftLength, DraftModel, LayerSkip, PromptLookup, make


@pytest.fixture(scope="module")
def tiny():
    return dl.load("tiny-random", vocab_size=32, num_layers=3)


def test_tree_draft_with_other_vocabulary_is_rejected_naming_both(tiny):
    """A draft chain may use another tokenizer (tests/bytes/test_cross_vocab_draft.py); trees
    verify the draft's token probabilities and still need the target's vocabulary."""
    other = dl.load("tiny-random", vocab_size=40)
    with pytest.raises(dl.VocabularyMismatch) as err:
        dl.generate(tiny, "abc", speculative=make("draft-tree", tiny, other, branching=(2, 1)), max_new_tokens=3)
    assert tiny.name in str(err.value) and other.name in str(err.value)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_k_is_rejected(tiny, k):
    with pytest.raises(dl.InvalidOption):
        PromptLookup(k=k)
    with pytest.raises(dl.InvalidOption):
        DraftModel(tiny, k=k)


@pytest.mark.parametrize("threshold", [0, 1, -0.5, 1.5])
def test_threshold_outside_unit_interval_is_rejected(tiny, threshold):
    with pytest.raises(dl.InvalidOption):
        DraftModel(tiny, k=3, threshold=threshold)


@pytest.mark.parametrize("layers", [0, 3, 4, -1])
def test_layer_skip_depth_outside_model_is_rejected(tiny, layers):
    with pytest.raises(dl.InvalidOption):
        LayerSkip(tiny, layers=layers)


def test_unknown_method_and_option(tiny):
    with pytest.raises(dl.InvalidOption):
        make("no-such-method", tiny)
    with pytest.raises(dl.InvalidOption):
        make("prompt-lookup", tiny, bogus=3)
    with pytest.raises(dl.InvalidOption):
        make("draft", tiny)  # needs a draft model
    with pytest.raises(dl.InvalidOption):
        dl.generate(tiny, "abc", speculative=42)


def test_draft_length_validation():
    with pytest.raises(dl.InvalidOption):
        DraftLength(0)
    with pytest.raises(dl.InvalidOption):
        DraftLength(4, prior_alpha=1.5)
