"""The divide-and-conquer shift kernel equals the naive oracle and the lane kernel exactly, and the
default early stopping keeps p-values valid (calibrated under the null) and unchanged where it does
not trigger."""

import numpy as np
import pytest

from decodelab.watermark import align, shifts


def _grid(rng, n, k, distinct):
    """Fixed-point EXP-like cost rows (cyclically extended) for a block of k tokens, as the kernels take them."""
    inv = rng.integers(0, distinct, k).astype(np.int64)
    rows = np.empty((distinct, n + k + align._LANES), np.int32)
    rows[:, :n] = (np.log(rng.random((distinct, n))) * align.SCALE).astype(np.int32)
    align._extend_rows(rows, n)
    return rows, inv


@pytest.mark.parametrize("gap", [0, 1200, 60000])
def test_divide_and_conquer_min_equals_naive_and_lanes(gap):
    """Exact min over shifts (and the decision at, just below and above it) on random grids, from one
    shift (n=1) to keys longer than the block and blocks longer than the key."""
    rng = np.random.default_rng(gap)
    for n, k in [(1, 4), (2, 6), (7, 5), (9, 9), (37, 9), (5, 17), (150, 10), (70, 30)]:
        for _ in range(4):
            rows, inv = _grid(rng, n, k, int(rng.integers(1, k + 1)))
            cost = [[int(x) for x in rows[inv[i], :n]] for i in range(k)]
            naive = align.naive_statistic(cost, k, n, gap, True) if n * k * k <= 20000 else None
            lanes = align._statistic(rows, inv, k, k, n, gap, True)
            scratch = shifts.scratch(n, k)
            exact = shifts.at_most(rows, inv, 0, k, n, gap, shifts._NO_THRESHOLD, *scratch)
            assert exact == lanes and (naive is None or exact == naive)
            for threshold in (exact, exact - 1, exact + 3000):
                assert (shifts.at_most(rows, inv, 0, k, n, gap, threshold, *scratch) <= threshold) == (exact <= threshold)


@pytest.mark.parametrize("mode,gap_cost", [(align.EXP, 0.0), (align.EXP, 0.3), (align.ITS_EDIT, 0.4)])
def test_kernels_give_identical_hits_and_pvalues(mode, gap_cost):
    """Both null-test kernels on the same resamples (random texts: hits and misses; n = 150 > 2 lane blocks;
    sub-blocks k < m so several blocks are searched): same p-values, resamples and hits."""
    rng = np.random.default_rng(int(gap_cost * 10) + mode)
    texts, tables = [], []
    for _ in range(6):
        tokens = rng.integers(0, 40, int(rng.integers(5, 14)))
        uniq = np.unique(tokens)
        texts.append(tokens)
        tables.append((rng.random((150, len(uniq))), None, None) if mode == align.EXP else
                      (None, rng.random(150), rng.permutation(40)[uniq] / 39.0))
    for block in (None, 4):
        runs = [align.fast_test(texts, mode=mode, edit=True, key_tables=tables, vocab_size=40, n=150, k=block,
                                gap_cost=gap_cost, resamples=40, seed=2, kernel=kernel) for kernel in ("shifts", "lanes")]
        for a, b in zip(*runs):
            assert np.array_equal(a, b)
        assert 0 < runs[0].hits.sum() < 6 * 40  # both outcomes occur


def test_a_broken_region_is_caught():
    """Negative control: dropping the left-path bound's +1 offset (so the region can cut an optimal path)
    or shrinking a region by one column changes some exact min, and this comparison sees it."""
    rng = np.random.default_rng(3)
    original = shifts._bounds.py_func

    def narrowed(k, lo, hi, left_path, right_path, first, last, lo_bound, hi_bound):
        original(k, lo, hi, left_path, right_path, first, last, lo_bound, hi_bound)
        if left_path >= 0:
            lo_bound[1:] = np.minimum(lo_bound[1:] + 1, hi_bound[1:])  # exclude the left path itself

    differs = 0
    for _ in range(20):
        rows, inv = _grid(rng, 37, 9, 9)
        exact = align._statistic(rows, inv, 9, 9, 37, 0, True)
        broken = _py_at_most(rows, inv, 9, 37, 0, narrowed)
        differs += broken != exact
        assert _py_at_most(rows, inv, 9, 37, 0, original) == exact  # the Python copy itself is right
    assert differs > 0


def _py_at_most(rows, inv, k, n, g, bounds):
    """`shifts.at_most`'s exact search in Python around the compiled region DP, with a pluggable region."""
    first, last, prev, cur, dirs, lo_bound, hi_bound, _, _ = shifts.scratch(n, k)

    def solve(j, left_path, right_path):
        bounds(k, j, j + k, left_path, right_path, first, last, lo_bound, hi_bound)
        value = shifts._region(rows, inv, 0, k, g, lo_bound, hi_bound, j, j + k, prev, cur, dirs)
        shifts._trace(dirs, k, j, j + k, first[j], last[j])
        return value

    best = min(solve(0, -1, -1), solve(n - 1, 0, -1))
    stack = [(0, n - 1)]
    while stack:
        a, b = stack.pop()
        if b - a > 1:
            mid = (a + b) // 2
            best = min(best, solve(mid, a, b))
            stack += [(a, mid), (mid, b)]
    return best


def _planted_grid(rng, n, k, shift):
    """Random EXP-like rows plus one strongly negative diagonal at `shift`, so that it holds the min."""
    inv = np.arange(k, dtype=np.int64)
    rows = np.empty((k, n + k + align._LANES), np.int32)
    rows[:, :n] = (np.log(rng.random((k, n))) * align.SCALE).astype(np.int32)
    for i in range(k):
        rows[i, (shift + i) % n] = -40 * align.SCALE
    align._extend_rows(rows, n)
    return rows, inv


def _screen_excludes(rows, inv, k, n, g, threshold, high_from):
    """The screen at the head of `shifts.at_most` in Python: all shifts, then shifts [0, n/2) and
    [high_from, n) (high_from = n/2 is right)."""
    line = np.empty(n + k + 2, np.int32)
    if shifts.relaxed_bound(rows, inv, 0, k, g, 0, n - 1 + k, line) > threshold:
        return True
    half = n // 2
    return (shifts.relaxed_bound(rows, inv, 0, k, g, 0, half - 1 + k, line) > threshold
            and shifts.relaxed_bound(rows, inv, 0, k, g, high_from, n - 1 + k, line) > threshold)


@pytest.mark.parametrize("gap", [0, 1200])
def test_screen_never_rules_out_the_best_shift(gap):
    """Whatever shift holds the min (the ends of both halves included), the thresholded search finds it at
    threshold = min and rules it out just below; a screen whose high half starts one shift late would
    wrongly rule out the min at shift n/2, and this planted grid shows it (negative control)."""
    rng = np.random.default_rng(gap + 5)
    n, k = 40, 12
    caught = 0
    for shift in (0, 1, n // 2 - 1, n // 2, n // 2 + 1, n - 1):
        rows, inv = _planted_grid(rng, n, k, shift)
        scratch = shifts.scratch(n, k)
        exact = shifts.at_most(rows, inv, 0, k, n, gap, shifts._NO_THRESHOLD, *scratch)
        assert exact == align._statistic(rows, inv, k, k, n, gap, True)
        assert shifts.at_most(rows, inv, 0, k, n, gap, exact, *scratch) <= exact
        assert shifts.at_most(rows, inv, 0, k, n, gap, exact - 1, *scratch) > exact - 1
        assert not _screen_excludes(rows, inv, k, n, gap, exact, n // 2)
        caught += _screen_excludes(rows, inv, k, n, gap, exact, n // 2 + 1)
    assert caught > 0
