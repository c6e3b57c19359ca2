"""The fast statistic and permutation test equal the naive pure-Python oracle exactly."""

import numpy as np
import pytest

from decodelab.watermark import align


def _case(rng, mode, vocab, n, m):
    tokens = rng.integers(0, vocab, m)
    uniq = np.unique(tokens)
    if mode == align.EXP:
        return tokens, (rng.random((n, len(uniq))), None, None)
    return tokens, (None, rng.random(n), rng.permutation(vocab)[uniq] / (vocab - 1.0))


@pytest.mark.parametrize("mode,edit,gamma", [
    (align.EXP, True, 0.0), (align.EXP, True, 0.3), (align.EXP, False, 0.0),
    (align.ITS, False, 0.0), (align.ITS_EDIT, True, 0.4),
])
@pytest.mark.parametrize("n", [7, 37])  # below and above the 16-shift block of the branch and bound
def test_fast_statistic_and_pvalue_equal_naive(mode, edit, gamma, n):
    rng = np.random.default_rng(n * 10 + mode)
    for trial in range(3):
        m = int(rng.integers(3, 10))
        block = None if trial == 0 else int(rng.integers(2, m + 1))
        tokens, table = _case(rng, mode, 23, n, m)
        stop = 2 if trial == 2 else None
        stats, pvalues, _ = align.fast_test([tokens], mode=mode, edit=edit, key_tables=[table], vocab_size=23, n=n,
                                            k=block, gamma=gamma, resamples=12, seed=7, stop_after=stop)
        stat, pvalue = align.naive_test(list(tokens), mode=mode, edit=edit, key_table=table, vocab_size=23, n=n,
                                        k=block, gamma=gamma, resamples=12, seed=7, stop_after=stop)
        assert stats[0] == stat
        assert pvalues[0] == pvalue


def test_broken_bound_would_be_caught():
    """Negative control for the oracle comparison: a wrong gap cost changes the statistic."""
    rng = np.random.default_rng(0)
    tokens, table = _case(rng, align.EXP, 23, 9, 8)
    fast, _, _ = align.fast_test([tokens], mode=align.EXP, edit=True, key_tables=[table], vocab_size=23, n=9, k=None,
                                 gamma=0.5, resamples=0)
    naive, _ = align.naive_test(list(tokens), mode=align.EXP, edit=True, key_table=table, vocab_size=23, n=9, k=None,
                                gamma=0.0, resamples=0)
    assert fast[0] != naive


def test_sequential_pvalue_rule():
    assert align.sequential_pvalue([False, True, True], 10, 2) == pytest.approx(2 / 3)
    assert align.sequential_pvalue([False] * 10, 10, 2) == pytest.approx(1 / 11)
    assert align.sequential_pvalue([True] * 3 + [False] * 7, 10, None) == pytest.approx(4 / 11)
