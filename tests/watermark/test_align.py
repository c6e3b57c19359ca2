"""The fast statistic and permutation test equal the naive pure-Python oracle exactly."""

import math

import numpy as np
import pytest

from decodelab.watermark import align


def _case(rng, mode, vocab, n, m):
    tokens = rng.integers(0, vocab, m)
    uniq = np.unique(tokens)
    if mode == align.EXP:
        return tokens, (rng.random((n, len(uniq))), None, None)
    return tokens, (None, rng.random(n), rng.permutation(vocab)[uniq] / (vocab - 1.0))


@pytest.mark.parametrize("mode,edit,gap_cost", [
    (align.EXP, True, 0.0), (align.EXP, True, 0.3), (align.EXP, False, 0.0),
    (align.ITS, False, 0.0), (align.ITS_EDIT, True, 0.4),
])
@pytest.mark.parametrize("n", [7, 37])  # below and above the 16-shift block of the branch and bound
@pytest.mark.parametrize("kernel", ["lanes", "shifts"])
def test_fast_statistic_and_pvalue_equal_naive(mode, edit, gap_cost, n, kernel):
    rng = np.random.default_rng(n * 10 + mode)
    for trial in range(3):
        m = int(rng.integers(3, 10))
        block = None if trial == 0 else int(rng.integers(2, m + 1))
        tokens, table = _case(rng, mode, 23, n, m)
        stop = 2 if trial == 2 else None
        stats, pvalues, _, _ = align.fast_test([tokens], mode=mode, edit=edit, key_tables=[table], vocab_size=23, n=n,
                                            k=block, gap_cost=gap_cost, resamples=12, seed=7, stop_after=stop,
                                               kernel=kernel)
        stat, pvalue = align.naive_test(list(tokens), mode=mode, edit=edit, key_table=table, vocab_size=23, n=n,
                                        k=block, gap_cost=gap_cost, resamples=12, seed=7, stop_after=stop)
        assert stats[0] == stat
        assert pvalues[0] == pvalue


@pytest.mark.parametrize("mode,edit,gap_cost", [(align.EXP, True, 0.0), (align.EXP, True, 0.7), (align.ITS_EDIT, True, 0.4),
                                              (align.EXP, False, 0.0)])
def test_edge_cases_equal_naive(mode, edit, gap_cost):
    """One token, block longer than the key (k > n), all tokens equal, block of 1, early stop."""
    rng = np.random.default_rng(5)
    cases = [([4], 5, None), (list(rng.integers(0, 23, 12)), 5, None), ([7] * 9, 11, None),
             (list(rng.integers(0, 23, 9)), 70, 1), (list(rng.integers(0, 23, 30)), 66, 20)]
    for tokens, n, block in cases:
        tokens = np.array(tokens)
        uniq = np.unique(tokens)
        if mode == align.EXP:
            table = (rng.random((n, len(uniq))), None, None)
        else:
            table = (None, rng.random(n), rng.permutation(23)[uniq] / 22.0)
        fast = align.fast_test([tokens], mode=mode, edit=edit, key_tables=[table], vocab_size=23, n=n, k=block,
                               gap_cost=gap_cost, resamples=6, seed=3)
        naive = align.naive_test(list(tokens), mode=mode, edit=edit, key_table=table, vocab_size=23, n=n, k=block,
                                 gap_cost=gap_cost, resamples=6, seed=3)
        assert (fast[0][0], fast[1][0]) == naive


def test_fixed_log_kernel_equals_reference_and_log():
    rng = np.random.default_rng(1)
    w = np.concatenate([rng.random(5000), rng.random(500) ** 40, [1.0, 0.5, 2.0 ** -60, align._SQRT_HALF,
                                                                  np.nextafter(align._SQRT_HALF, 0), 1 - 2.0 ** -53]])
    out = np.empty(len(w), np.int32)
    align._fixed_log(w, np.empty(len(w), np.int64), out)
    assert out.tolist() == [align._py_fixed_log(float(x)) for x in w]
    # Within one fixed-point unit of the true log (the rounding is truncation toward zero).
    assert np.all(np.abs(out / align.SCALE - np.log(w)) < 1.0 / align.SCALE)
    xi = np.array([0.0, 1.0, 1 - 2.0 ** -53])  # xi = 1 can come out of the rounding: clamped, finite
    assert [align._py_exp_cost(float(x)) for x in xi] == [0, align._py_fixed_log(2.0 ** -60), -150473]


def test_broken_bound_would_be_caught():
    """Negative control for the oracle comparison: a wrong gap cost changes the statistic."""
    rng = np.random.default_rng(0)
    tokens, table = _case(rng, align.EXP, 23, 9, 8)
    fast, _, _, _ = align.fast_test([tokens], mode=align.EXP, edit=True, key_tables=[table], vocab_size=23, n=9, k=None,
                                 gap_cost=0.5, resamples=0)
    naive, _ = align.naive_test(list(tokens), mode=align.EXP, edit=True, key_table=table, vocab_size=23, n=9, k=None,
                                gap_cost=0.0, resamples=0)
    assert fast[0] != naive


def test_oracle_disagrees_with_a_broken_kernel(monkeypatch):
    """Negative control for the exact-equality test: a kernel with a changed cost rounding differs."""
    rng = np.random.default_rng(2)
    tokens, table = _case(rng, align.EXP, 23, 9, 8)
    naive, _ = align.naive_test(list(tokens), mode=align.EXP, edit=True, key_table=table, vocab_size=23, n=9,
                                k=None, gap_cost=0.0, resamples=0)
    monkeypatch.setattr(align, "_py_fixed_log", lambda w: int(math.log(w) * align.SCALE) - 1)
    broken, _ = align.naive_test(list(tokens), mode=align.EXP, edit=True, key_table=table, vocab_size=23, n=9,
                                 k=None, gap_cost=0.0, resamples=0)
    assert broken != naive


def test_too_long_block_is_a_typed_error():
    with pytest.raises(align.AlignmentOverflow):
        align.fast_test([np.zeros(20000, np.int64)], mode=align.EXP, edit=True, key_tables=[(np.full((4, 1), 0.5), None,
                        None)], vocab_size=5, n=4, k=None, gap_cost=0.0, resamples=0)


def test_sequential_pvalue_rule():
    assert align.sequential_pvalue([False, True, True], 10, 2) == pytest.approx(2 / 3)
    assert align.sequential_pvalue([False] * 10, 10, 2) == pytest.approx(1 / 11)
    assert align.sequential_pvalue([True] * 3 + [False] * 7, 10, None) == pytest.approx(4 / 11)


@pytest.mark.parametrize("gap_cost", [0.0, 0.3])
def test_branch_and_bound_decisions_equal_naive(gap_cost):
    """Keys longer than two exact blocks (n=150 > 2 x 64 lanes), so the relaxed bounds prune ranges:
    a planted text (every null resample must be ruled out) and random texts (hits and misses)."""
    rng = np.random.default_rng(11)
    n, m = 150, 10
    for planted in (True, False, False):
        tokens = rng.integers(0, 23, m)
        uniq, inv = np.unique(tokens, return_inverse=True)
        table = rng.random((n, len(uniq)))
        if planted:  # the text follows the key at shift 77: xi close to 1 where it was "sampled"
            for i in range(m):
                table[(77 + i) % n, inv[i]] = 1 - 1e-9
        fast = align.fast_test([tokens], mode=align.EXP, edit=True, key_tables=[(table, None, None)], vocab_size=23,
                               n=n, k=None, gap_cost=gap_cost, resamples=25, seed=planted)
        naive = align.naive_test(list(tokens), mode=align.EXP, edit=True, key_table=(table, None, None),
                                 vocab_size=23, n=n, k=None, gap_cost=gap_cost, resamples=25, seed=planted)
        assert (fast[0][0], fast[1][0]) == naive
        if planted:
            assert naive[1] == pytest.approx(1 / 26)


@pytest.mark.parametrize("gap", [0, 1200, 60000])
def test_decision_is_sharp_at_the_exact_minimum(gap):
    """`_edit_at_most(threshold)` is True at threshold = min_j A_j and False one unit below. With an
    expensive gap (60000) the relaxed bound of a range equals the best exact value in it, so a bound
    that overshoots by one unit or a range that misses its last shift's columns fails this."""
    rng = np.random.default_rng(gap)
    # The last shifts of the ranges that get a bound (74, 149 for n = 150) are planted as the optimum.
    for n, k, plant in ((150, 9, None), (150, 9, 74), (150, 9, 149), (300, 40, None), (257, 64, None)):
        uniq = 1 + rng.integers(0, k)
        inv = rng.integers(0, uniq, k).astype(np.int64)
        rows = np.empty((uniq, n + k + align._LANES), np.int32)
        rows[:, :n] = (np.log(rng.random((uniq, n))) * align.SCALE).astype(np.int32)
        if plant is not None:
            uniq = k
            inv = np.arange(k, dtype=np.int64)
            rows = np.empty((k, n + k + align._LANES), np.int32)
            rows[:, :n] = (np.log(rng.random((k, n))) * align.SCALE).astype(np.int32)
            rows[np.arange(k), (plant + np.arange(k)) % n] = -20 * align.SCALE
        align._extend_rows(rows, n)
        exact = align._statistic(rows, inv, k, k, n, gap, True)
        scratch = (np.empty((k + 1) * align._LANES, np.int32), np.empty((k + 1) * align._LANES, np.int32),
                   np.empty(align._LANES, np.int32), np.empty(align._LANES, np.int32),
                   np.empty(rows.shape[1] + 1, np.int32))
        assert align._edit_at_most(rows, inv, 0, k, n, gap, exact, *scratch)
        assert not align._edit_at_most(rows, inv, 0, k, n, gap, exact - 1, *scratch)
