"""Data mixture inference from BPE merge lists (Hayase et al. 2024) on tokenizers trained here on
known mixtures of the offline categories: recovery within a stated error, the replay of merges is
exact, and two negative controls (a shuffled merge list, a merge list from another mixture)."""

from __future__ import annotations

import random

import numpy as np
import pytest

import decodelab as dl
from decodelab.tokenizer import (
    builtin_categories,
    infer_mixture,
    mean_absolute_error,
    merges_of,
    mixed_texts,
    random_proportions,
    train_bpe,
)
from decodelab.tokenizer.corpora import Category

MERGES = 300
TRAIN_CHARS = 150_000
# Stated error (docs/benchmarks.md has the full benchmark): with 3 categories, 150k-character
# held-out samples, 150k characters of training text and 300 merges, the mean absolute error of the
# shares is below 0.06 on average (measured: 0.036 over 6 random mixtures; a uniform guess: ~0.15).
MAX_MEAN_MAE = 0.06


@pytest.fixture(scope="module")
def cats():
    return builtin_categories(("english", "python", "c"), max_chars=300_000)


@pytest.fixture(scope="module")
def runs(cats):
    """Four random mixtures: (truth, tokenizer, inferred result)."""
    rng = np.random.default_rng(7)
    out = []
    for trial in range(4):
        truth = random_proportions(list(cats), rng)
        tok = train_bpe(mixed_texts(cats, truth, TRAIN_CHARS, seed=trial), MERGES)
        out.append((truth, tok, infer_mixture(tok, cats, num_merges=MERGES)))
    return out


def test_recovers_known_mixtures_within_stated_error(cats, runs):
    errors, uniform = [], []
    for truth, _, result in runs:
        assert sum(result.proportions.values()) == pytest.approx(1.0)
        errors.append(mean_absolute_error(truth, result.proportions))
        uniform.append(mean_absolute_error(truth, dict.fromkeys(cats, 1 / 3)))
    assert np.mean(errors) < MAX_MEAN_MAE, errors
    assert np.mean(errors) < 0.5 * np.mean(uniform), (errors, uniform)


def test_shuffled_merge_list_recovers_badly(cats, runs):
    """Negative control: the same merges in a random order carry no mixture signal."""
    good, bad = [], []
    for k, (truth, tok, result) in enumerate(runs):
        merges = merges_of(tok)
        random.Random(k).shuffle(merges)
        bad.append(mean_absolute_error(truth, infer_mixture(tok, cats, num_merges=MERGES, merges=merges).proportions))
        good.append(mean_absolute_error(truth, result.proportions))
    assert np.mean(bad) > 0.15 and np.mean(bad) > 2 * np.mean(good), (good, bad)


def test_inference_tracks_the_mixture_not_the_categories(cats):
    """Two tokenizers on opposite mixtures of the same categories get opposite estimates."""
    shares = []
    for truth in ({"english": 0.8, "python": 0.2}, {"english": 0.2, "python": 0.8}):
        two = {k: cats[k] for k in truth}
        tok = train_bpe(mixed_texts(two, truth, TRAIN_CHARS), MERGES)
        shares.append(infer_mixture(tok, two, num_merges=MERGES).proportions["english"])
    assert shares[0] > 0.6 and shares[1] < 0.4, shares


def test_replay_of_merges_matches_the_trainer_exactly():
    """With the exact training text of each category as the sample, the true mixture satisfies every
    merge-order constraint: zero slack. Dropping the first merge (a broken replay) breaks that."""
    texts = {"a": ["the cat sat on the mat with another cat\n\n"] * 40 + ["a rat ate the hat\n\n"] * 9,
             "b": ["def f(x):\n    return x + 1\n\n"] * 30 + ["for i in range(3): print(i)\n\n"] * 11}
    exact = {k: Category(k, "test", tuple(v), tuple(v)) for k, v in texts.items()}
    tok = train_bpe([t for v in texts.values() for t in v], 40)
    merges = merges_of(tok)
    assert infer_mixture(tok, exact, num_merges=40).total_slack == pytest.approx(0.0, abs=1e-6)
    assert infer_mixture(tok, exact, num_merges=39, merges=merges[1:]).total_slack > 1.0


def test_mixture_api_checks_options_and_categories(tmp_path, cats):
    tok = train_bpe(mixed_texts(cats, {"english": 1, "python": 1}, 20_000), 50)
    with pytest.raises(dl.InvalidOption, match="num_merges"):
        dl.tokenizer.mixture(tok, ["english", "python"], num_merges=0, progress=False)
    with pytest.raises(dl.InvalidOption, match="top_pairs"):
        dl.tokenizer.mixture(tok, ["english", "python"], top_pairs=10**6, progress=False)
    with pytest.raises(dl.InvalidOption, match="exceeds"):
        dl.tokenizer.mixture(tok, ["english", "python"], num_merges=100_000, top_pairs=1000, progress=False)
    with pytest.raises(dl.InvalidOption, match="unknown option"):
        dl.tokenizer.mixture(tok, ["english", "python"], merges_count=3, progress=False)
    with pytest.raises(dl.InvalidOption, match="unknown built-in"):
        dl.tokenizer.mixture(tok, ["english", "klingon"], progress=False)
    with pytest.raises(dl.InvalidOption, match="2 to"):
        dl.tokenizer.mixture(tok, ["english"], progress=False)
    empty, binary = tmp_path / "empty.txt", tmp_path / "bin.txt"
    empty.write_text("  \n")
    binary.write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(dl.InvalidOption, match="empty"):
        dl.tokenizer.mixture(tok, {"x": str(empty), "english": cats["english"]}, progress=False)
    with pytest.raises(dl.InvalidOption, match="not UTF-8"):
        dl.tokenizer.mixture(tok, {"x": str(binary), "english": cats["english"]}, progress=False)
    with pytest.raises(dl.InvalidOption, match="too little text"):
        dl.tokenizer.mixture(tok, {"x": ["short"], "english": cats["english"]}, progress=False)
    with pytest.raises(dl.InvalidOption, match="proportions"):
        mixed_texts(cats, {"english": -1.0, "python": 0.5}, 1000)


def test_non_bpe_and_malformed_tokenizers_are_refused(tmp_path):
    from tokenizers import Tokenizer, models

    with pytest.raises(dl.InvalidOption, match="not a BPE"):
        merges_of(Tokenizer(models.WordLevel({"a": 0}, unk_token="a")))
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(dl.InvalidOption, match="not a tokenizers JSON"):
        merges_of(str(bad))
