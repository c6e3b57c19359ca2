"""EXP-edit on SmolLM2: watermarked texts survive random substitution; the false positive rate on
text independent of the key is at most nominal."""

import numpy as np
import pytest

from decodelab import watermark

PROMPTS = ["Write a short story about a lighthouse keeper.", "Explain how rain forms.",
           "Describe a busy market.", "Give advice to a new gardener.", "Tell me about the history of bread.",
           "Describe the ocean at night."]


@pytest.mark.slow
def test_exp_edit_detects_substituted_text(smol):
    rng = np.random.default_rng(0)
    outs = watermark.generate(smol, PROMPTS * 2, key="power", scheme="exp", max_new_tokens=40, seed=0,
                              records=False, logit_bias={t: -100.0 for t in smol.eos_token_ids})
    texts = [list(o.token_ids) for o in outs]
    assert all(len(t) == 40 for t in texts)
    attacked = []
    for t in texts:
        for i in rng.choice(len(t), 14, replace=False):  # 35% of tokens replaced at random
            t[i] = int(rng.integers(0, smol.vocab_size))
        attacked.append(t)
    detected = [d.p_value <= 0.01 for d in watermark.detect(smol, attacked, key="power", resamples=500)]
    assert sum(detected) >= 6, f"only {sum(detected)}/12 detected"
    # Negative control: the same texts under another key are not detected.
    other = watermark.detect(smol, attacked, key="not-the-key", resamples=200, stop_after=10)
    assert sum(d.p_value <= 0.01 for d in other) <= 1


@pytest.mark.slow
def test_false_positive_rate_is_nominal(smol):
    rng = np.random.default_rng(1)
    texts = [rng.integers(0, smol.vocab_size, 40).tolist() for _ in range(500)]
    p = np.array([d.p_value for d in watermark.detect(smol, texts, key="power", resamples=1000, stop_after=10)])
    # Binomial(500, 0.01): P(X >= 13) ~ 0.002; a valid test rejects about 5 of 500.
    assert np.sum(p <= 0.01) <= 12
    assert np.sum(p <= 0.2) >= 60  # not degenerate: p-values are spread, not all 1
