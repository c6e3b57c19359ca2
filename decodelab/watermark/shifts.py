"""Divide and conquer over shifts for the edit statistic's min over all cyclic shifts of the key.

The edit cost A_j of a block against the key window starting at shift j is a shortest path in a
planar grid DAG (rows: text positions 0..k; columns: key columns 0..n+k-1) from (0, j) to (k, j+k).
Shortest paths of sources and sinks ordered along the top and bottom can be chosen not to cross, so
with the paths of shifts a < b known, shift mid in (a, b) has a shortest path between them: only
that region needs a DP. Solving the middle shift first and recursing visits each grid cell about
once per level, O(k (n + k) log n) cells instead of O(n k^2) for all shifts one by one.

Maes (1990), "On a cyclic string-to-string correction problem" (Information Processing Letters
35(2)), the same divide and conquer for the cyclic edit distance. Integer costs keep every value
equal to the other kernels' bit for bit (`align.naive_statistic` is the oracle).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import jitcache  # noqa: F401 - before any cached kernel is defined

_INF = np.int64(1) << np.int64(60)
_DIAG, _UP, _LEFT = 0, 1, 2
_NO_THRESHOLD = -(1 << 62)  # at_most's threshold for the exact min
_PRUNE_FROM = 4  # ranges of more shifts than this get a lower bound before they are split


@njit(cache=True, error_model="numpy")
def _region(rows, inv, i0, k, g, lo_bound, hi_bound, free_until, end_from, prev, cur, dirs):
    """Shortest path value through cells (i, c) with lo_bound[i] <= c <= hi_bound[i] (both
    non-decreasing in i), from row 0 (free start at columns up to free_until) to row k (best end at
    columns from end_from); the moves are recorded in dirs. With free_until = lo_bound[0] and
    end_from = hi_bound[k] it is the path from (0, lo_bound[0]) to (k, hi_bound[k]).

    prev/cur hold one DP row at index c + 1 (index 0 is column -1, always infinite).
    """
    a0, b0 = lo_bound[0], hi_bound[0]
    prev[a0] = _INF
    for c in range(a0, b0 + 1):
        prev[c + 1] = max(c - free_until, 0) * g
        dirs[0, c] = _LEFT
    for i in range(1, k + 1):
        a, b = lo_bound[i], hi_bound[i]
        pa, pb = lo_bound[i - 1], hi_bound[i - 1]
        prev[pa] = _INF  # column pa - 1 is outside the previous row's range
        for c in range(pb + 1, b + 1):
            prev[c + 1] = _INF
        row = rows[inv[i0 + i - 1]]
        drow = dirs[i]
        left = _INF
        for c in range(a, b + 1):  # branch-free: the moves are data dependent
            diag = prev[c] + row[c - 1]
            up = prev[c + 1] + g
            lf = left + g
            best = min(diag, up)
            v = min(best, lf)
            drow[c] = _LEFT if lf < best else (_UP if up < diag else _DIAG)
            cur[c + 1] = v
            left = v
        prev, cur = cur, prev
    best = _INF
    for c in range(max(end_from, lo_bound[k]), hi_bound[k] + 1):
        best = min(best, prev[c + 1])
    return best


@njit(cache=True, error_model="numpy")
def _trace(dirs, k, start, end, first, last):
    """first[i], last[i] = the columns where the recorded path from (0, start) to (k, end) enters
    and leaves row i."""
    i, c = k, end
    last[k] = c
    first[k] = c
    while i > 0 or c > start:
        d = dirs[i, c]
        if d == _LEFT:
            c -= 1
            first[i] = c
        else:
            i -= 1
            if d == _DIAG:
                c -= 1
            first[i] = c
            last[i] = c


@njit(cache=True, error_model="numpy")
def _bounds(k, lo, hi, left_path, right_path, first, last, lo_bound, hi_bound):
    """The region right of path left_path and left of path right_path (-1: none), in columns lo..hi."""
    for i in range(k + 1):
        a, b = lo, hi
        if left_path >= 0 and first[left_path, i] > a:
            a = first[left_path, i]
        if right_path >= 0 and last[right_path, i] < b:
            b = last[right_path, i]
        lo_bound[i] = a
        hi_bound[i] = b


@njit(cache=True, error_model="numpy")
def _solve(rows, inv, i0, k, g, j, left_path, right_path, first, last, lo_bound, hi_bound, prev, cur, dirs):
    """A_j inside the region between two known paths; its own path is written to first[j], last[j]."""
    _bounds(k, j, j + k, left_path, right_path, first, last, lo_bound, hi_bound)
    value = _region(rows, inv, i0, k, g, lo_bound, hi_bound, j, j + k, prev, cur, dirs)
    _trace(dirs, k, j, j + k, first[j], last[j])
    return value


@njit(cache=True, error_model="numpy")
def _between(rows, inv, i0, k, g, a, b, first, last, lo_bound, hi_bound, prev, cur, dirs):
    """A lower bound on A_j for every shift a < j < b: free start and end between the paths of a and b."""
    _bounds(k, a + 1, b - 1 + k, a, b, first, last, lo_bound, hi_bound)
    return _region(rows, inv, i0, k, g, lo_bound, hi_bound, b - 1, a + 1 + k, prev, cur, dirs)


@njit(cache=True, error_model="numpy")
def relaxed_bound(rows, inv, i0, k, g, c0, c1, line):
    """Lower bound on A_j for every shift j with [j, j+k) inside [c0, c1): the same alignment with
    free key gaps before and after (start anywhere in row 0, end anywhere in row k).

    One DP row of c1 - c0 + 1 cells, swept two text rows at a time (row i+1 one column behind
    row i): the two dependency chains overlap, and the mins stay branch-free (a data-dependent
    branch per cell mispredicts often on long rows).
    """
    width = c1 - c0
    for c in range(width + 1):
        line[c] = 0
    i = 1
    while i + 1 <= k:
        sa = rows[inv[i0 + i - 1]][c0:c1]
        sb = rows[inv[i0 + i]][c0:c1]
        diag_a = line[0]
        left_a = i * g
        left_b = left_a + g
        prev_a = left_a
        line[0] = left_b
        if g == 0:  # the default for EXP: two fewer adds on the dependency chain
            for c in range(width):
                up = line[c + 1]
                va = min(left_a, min(up, diag_a + sa[c]))
                diag_a = up
                left_a = va
                vb = min(left_b, min(va, prev_a + sb[c]))
                prev_a = va
                left_b = vb
                line[c + 1] = vb
        else:
            for c in range(width):
                up = line[c + 1]
                va = min(left_a + g, min(up + g, diag_a + sa[c]))
                diag_a = up
                left_a = va
                vb = min(left_b + g, min(va + g, prev_a + sb[c]))
                prev_a = va
                left_b = vb
                line[c + 1] = vb
        i += 2
    if i == k:
        seg = rows[inv[i0 + i - 1]][c0:c1]
        diag = line[0]
        left = i * g
        line[0] = left
        for c in range(width):
            up = line[c + 1]
            left = min(left + g, min(up + g, diag + seg[c]))
            diag = up
            line[c + 1] = left
    best = line[0]
    for c in range(width + 1):
        best = min(best, line[c])
    return best


@njit(cache=True, error_model="numpy")
def at_most(rows, inv, i0, k, n, g, threshold, first, last, prev, cur, dirs, lo_bound, hi_bound, stack, line):
    """min_j A_j over the n shifts of block i0, exactly, or (threshold given, not None-like) only
    whether it is <= threshold: returns a value <= threshold as soon as one shift has it, and
    skips ranges of shifts whose lower bound (`_between`) exceeds the threshold.

    Divide and conquer over shifts (module docstring). Pass threshold = -1 << 62 for the exact min.
    Before it, a screen: `relaxed_bound` over all shifts, then over each half of them. Null keys
    of a watermarked text rarely come near its statistic, and these bounds rule most of them out
    at a fraction of one exact shift's cost: the whole-range bound fails more often when edits
    (substitutions) raise the observed cost, but the two half-range bounds, whose windows are
    128 columns narrower, almost never do.
    """
    exact = threshold == _NO_THRESHOLD
    if not exact and n > _PRUNE_FROM:
        bound = relaxed_bound(rows, inv, i0, k, g, 0, n - 1 + k, line)
        if bound > threshold:
            return bound
        half = n // 2
        low = relaxed_bound(rows, inv, i0, k, g, 0, half - 1 + k, line)
        if low > threshold:
            high = relaxed_bound(rows, inv, i0, k, g, half, n - 1 + k, line)
            if high > threshold:
                return min(low, high)
    best = _solve(rows, inv, i0, k, g, 0, -1, -1, first, last, lo_bound, hi_bound, prev, cur, dirs)
    if n == 1 or (not exact and best <= threshold):
        return best
    best = min(best, _solve(rows, inv, i0, k, g, n - 1, 0, -1, first, last, lo_bound, hi_bound, prev, cur, dirs))
    if not exact and best <= threshold:
        return best
    stack[0, 0] = 0
    stack[0, 1] = n - 1
    top = 1
    while top > 0:
        top -= 1
        a = stack[top, 0]
        b = stack[top, 1]
        if b - a <= 1:
            continue
        if not exact and b - a > _PRUNE_FROM and _between(rows, inv, i0, k, g, a, b, first, last, lo_bound,
                                                           hi_bound, prev, cur, dirs) > threshold:
            continue
        mid = (a + b) // 2
        value = _solve(rows, inv, i0, k, g, mid, a, b, first, last, lo_bound, hi_bound, prev, cur, dirs)
        best = min(best, value)
        if not exact and best <= threshold:
            return best
        stack[top, 0] = a
        stack[top, 1] = mid
        stack[top + 1, 0] = mid
        stack[top + 1, 1] = b
        top += 2
    return best


@njit(cache=True)
def scratch(n, k):
    """Work arrays of `at_most` for keys of n positions and blocks of up to k tokens."""
    width = n + k + 2
    return (np.empty((n, k + 1), np.int32), np.empty((n, k + 1), np.int32), np.empty(width, np.int64),
            np.empty(width, np.int64), np.empty((k + 1, width), np.uint8), np.empty(k + 1, np.int64),
            np.empty(k + 1, np.int64), np.empty((64, 2), np.int64), np.empty(width, np.int32))
