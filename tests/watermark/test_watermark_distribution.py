"""EXP and ITS are distortion-free: over random keys, watermarked samples follow the model's exact
(processed) distribution; KGW (delta > 0) is caught as distorting by the same test."""

import numpy as np
import oracle as ref
import pytest
import torch

import decodelab as dl
from decodelab import watermark

VOCAB = 12
PROMPT = [1, 4, 5]
ROWS = 500  # rows of one batch use disjoint key positions (shifts 2b), so they are independent
KEYS = 6


@pytest.fixture(scope="module")
def lm():
    return dl.load("tiny-random", vocab_size=VOCAB, init_std=1.0, seed=0)


def _exact_two_tokens(lm, top_k=None):
    """Law of the 1-2 generated tokens: bin x1*V + x2, or V*V + x1 when x1 ends the text."""
    def law(ids):
        with torch.no_grad():
            logits = lm.model(torch.tensor([ids])).logits[0, -1].double().numpy()
        return ref.softmax(ref.ref_top_k(logits, top_k) if top_k else logits)

    probs = np.zeros(VOCAB * VOCAB + VOCAB)
    first = law(PROMPT)
    for x1 in range(VOCAB):
        if x1 in lm.eos_token_ids:
            probs[VOCAB * VOCAB + x1] += first[x1]
        else:
            probs[x1 * VOCAB:(x1 + 1) * VOCAB] += first[x1] * law(PROMPT + [x1])
    return probs


def _samples(lm, scheme, **options):
    bins = []
    for key in range(KEYS):
        outs = watermark.generate(lm, [PROMPT] * ROWS, key=f"key-{key}", scheme=scheme, n=2 * ROWS,
                                  shift=[2 * b for b in range(ROWS)], max_new_tokens=2, temperature=1.0,
                                  records=False, seed=key, **options)
        for out in outs:
            ids = out.token_ids
            bins.append(VOCAB * VOCAB + ids[0] if len(ids) == 1 else ids[0] * VOCAB + ids[1])
    return bins


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["exp", "its"])
def test_watermark_matches_exact_distribution(lm, gof, scheme):
    gof.assert_matches(_samples(lm, scheme), _exact_two_tokens(lm), f"{scheme} watermark")


@pytest.mark.slow
def test_watermark_composes_with_top_k(lm, gof):
    gof.assert_matches(_samples(lm, "exp", top_k=3), _exact_two_tokens(lm, top_k=3), "exp watermark + top-k")


@pytest.mark.slow
def test_kgw_is_detected_as_distorting(lm, gof):
    gof.assert_rejects(_samples(lm, "kgw", delta=2.0), _exact_two_tokens(lm), "KGW (delta=2)")


def test_same_key_and_shift_repeat_exactly(lm):
    a = watermark.generate(lm, PROMPT, key="k", scheme="exp", shift=3, max_new_tokens=6, temperature=1.0)
    b = watermark.generate(lm, PROMPT, key="k", scheme="exp", shift=3, max_new_tokens=6, temperature=1.0, seed=99)
    assert a.token_ids == b.token_ids  # EXP/ITS draw no other randomness than the key
