"""Test statistics of the distortion-free watermarks and their permutation test, fast and naive.

Kuditipudi, Thickstun, Hashimoto & Liang (2023), "Robust Distortion-free Watermarks for Language
Models". A text y (m tokens) is compared with the key sequence xi (n positions): for every block
y[i:i+k] and every cyclic shift j of the key, a cost d(y[i:i+k], xi[j:j+k]) is computed and the
statistic is the minimum over (i, j). The costs are

- EXP:       d = sum_l log(1 - xi_{j+l}[y_{i+l}])                      (more negative = watermarked)
- ITS:       d = -sum_l (u_{j+l} - 1/2) (eta(pi(y_{i+l})) - 1/2)       (eta = rank / (V-1))
- EXP-edit:  Levenshtein cost with base cost log(1 - xi_l[y_i]) and gap cost gap_cost
- ITS-edit:  Levenshtein cost with base cost |u_l - eta(pi(y_i))| and gap cost gap_cost

The p-value is the permutation test of the paper: recompute the statistic against T fresh
random key sequences xi' and return (1 + #{phi(y, xi') <= phi(y, xi)}) / (T + 1). It is exact
for any T under H0 (text independent of the key).

Fixed-point costs. Every base cost and the gap cost are rounded once to integers (multiples of
1/SCALE, truncated toward zero), through the same function for the secret key and for the
resampled keys, so the permutation test stays exact; the log in EXP is a short polynomial
(`_py_fixed_log`, within 1e-9 of log before rounding) that vectorises. Integer sums are exact and
associative: the alignment values do not depend on the order in which a kernel adds them, the
lower bounds below are exact, and the fast path returns bit for bit the numbers of the naive
pure-Python oracle `naive_statistic` / `naive_test` (so the p-values agree exactly).

Speed. The exact Levenshtein DP runs for _LANES shifts at once in int32 lanes (one contiguous
load of the key costs per cell row feeds all shifts, and LLVM emits AVX2/AVX-512 code). The
permutation test only needs to decide "phi(y, xi') <= observed" for each resample: a relaxed DP
over a range of shifts (start and end anywhere in the range's key columns) bounds all of them
from below in one pass; ranges whose bound exceeds the observed value are dropped, others are
halved down to _LANES shifts, which are computed exactly, until a hit is found or nothing is left.
Resampled keys come from a counter-based SplitMix64 stream (seed, resample, position, token),
identical in both implementations.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from numba import config as numba_config
from numba import get_num_threads, njit, prange, set_num_threads, uint64
from numba.core.errors import NumbaTypeSafetyWarning

from ..errors import InvalidOption
from . import jitcache, shifts  # noqa: F401 - jitcache picks numba's cache dir before any kernel is defined
from .keys import WatermarkError

# prange indices are unsigned inside numba's parallel loops; the casts back are safe here.
warnings.filterwarnings("ignore", category=NumbaTypeSafetyWarning)

EXP, ITS, ITS_EDIT = 0, 1, 2  # cost modes; EXP-edit is EXP costs with edit=True
AUTO, SHIFTS, LANES = 0, 1, 2  # null-test kernels for the edit statistic (see _null_at_most)
KERNELS = {"auto": AUTO, "shifts": SHIFTS, "lanes": LANES}
_SHIFTS_MIN_K = 128  # AUTO: blocks this long use SHIFTS (2x faster at 256 tokens), shorter ones LANES
_SHIFTS_MAX_K = 2048  # longer blocks always use LANES: the shift kernel keeps k x (n + k) move bytes
SCALE = 4096  # fixed-point costs: integer = trunc(SCALE * cost)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_MASK = (1 << 64) - 1
_LANES = 64  # shifts per exact DP block (int32 lanes; 64 keeps the two DP rows in L1/L2)
_LANES_U = np.uint64(_LANES)
_FLOOR = 2.0 ** -60  # 1 - xi is clamped here: xi can round to exactly 1.0
_SQRT_HALF = 0.7071067811865476
_LN2 = 0.6931471805599453
_C3, _C5, _C7, _C9 = 1.0 / 3.0, 1.0 / 5.0, 1.0 / 7.0, 1.0 / 9.0
_MANTISSA = np.int64(0x000FFFFFFFFFFFFF)
_HALF_EXPONENT = np.int64(1022 << 52)  # exponent bits of a float in [0.5, 1)
_EXP_MAX_COST = 170_400  # |fixed_log(2^-60)| = 41.59 * SCALE, the most negative EXP cost
_INT32_MAX = 2**31 - 1
_CHUNK_TASKS = 4096  # (text, resample) pairs per parallel call at most


class AlignmentOverflow(WatermarkError, InvalidOption):
    """A block too long for the int32 alignment kernels (about 12,000 tokens for EXP)."""


# ---------------------------------------------------------------- counter-based uniforms
@njit(cache=True, inline="always", error_model="numpy")
def _smix(x):
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always", error_model="numpy")
def _mix(a, b):
    return _smix(a ^ _smix(b))


@njit(cache=True, inline="always", error_model="numpy")
def _unif(h):
    return (float(h >> np.uint64(11)) + 0.5) / 9007199254740992.0


def _py_smix(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _py_mix(a: int, b: int) -> int:
    return _py_smix(a ^ _py_smix(b))


def _py_unif(h: int) -> float:
    return ((h >> 11) + 0.5) / 9007199254740992.0


# ---------------------------------------------------------------- fixed-point costs
def _py_fixed_log(w: float) -> int:
    """trunc(SCALE * log(w)) for w in (0, 1], the reference definition.

    w = m 2^e with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172,
    by its odd series to s^9 (error < 1e-9, far below the 1/SCALE rounding).
    """
    m, e = math.frexp(w)  # m in [0.5, 1)
    if m < _SQRT_HALF:
        m = m + m
        e = e - 1
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    r = float(e) * _LN2 + 2.0 * s * (1.0 + z * (_C3 + z * (_C5 + z * (_C7 + z * _C9))))
    return int(r * SCALE)


def _py_exp_cost(xi: float) -> int:
    return _py_fixed_log(max(1.0 - xi, _FLOOR))


def _py_its_cost(mode: int, u: float, eta: float) -> int:
    if mode == ITS:
        return int(-(u - 0.5) * (eta - 0.5) * SCALE)
    return int(abs(u - eta) * SCALE)


@njit(cache=True, error_model="numpy")
def _fixed_log(w, mant, out):
    """out[p] = _py_fixed_log(w[p]) (same operations; frexp done on the bits so the loops vectorise)."""
    count = w.shape[0]
    bits = w.view(np.int64)
    for p in range(count):
        mant[p] = (bits[p] & _MANTISSA) | _HALF_EXPONENT
    mf = mant[:count].view(np.float64)
    for p in range(count):
        e = ((bits[p] >> 52) & 0x7FF) - 1022
        m = mf[p]
        small = m < _SQRT_HALF
        m = m + m if small else m
        e = e - 1 if small else e
        f = m - 1.0
        s = f / (2.0 + f)
        z = s * s
        r = float(e) * _LN2 + 2.0 * s * (1.0 + z * (_C3 + z * (_C5 + z * (_C7 + z * _C9))))
        out[p] = np.int32(r * SCALE)


@njit(cache=True, error_model="numpy")
def _extend_rows(rows, n):
    """Columns n.. of every row repeat the key cyclically (so no kernel needs a modulo)."""
    for t in range(rows.shape[0]):
        row = rows[t]
        for c in range(n, row.shape[0]):
            row[c] = row[c - n]


@njit(cache=True, error_model="numpy")
def _key_rows(mode, table, u, eta, n, rows, w, mant):
    """rows[t, c] = fixed-point cost of the text's distinct token t at key position c mod n."""
    for t in range(rows.shape[0]):
        row = rows[t]
        if mode == EXP:
            for pos in range(n):
                w[pos] = max(1.0 - table[pos, t], _FLOOR)
            _fixed_log(w[:n], mant, row[:n])
        elif mode == ITS:
            for pos in range(n):
                row[pos] = np.int32(-(u[pos] - 0.5) * (eta[t] - 0.5) * SCALE)
        else:
            for pos in range(n):
                row[pos] = np.int32(abs(u[pos] - eta[t]) * SCALE)
    _extend_rows(rows, n)


@njit(cache=True, error_model="numpy")
def _exp_cell_hashes(uniq, vocab, n, cells):
    """cells[t, pos] = the inner half of `_mix(stream, pos * vocab + token)`, which no resample changes:
    computed once per text, it halves the hashing of every null key."""
    for t in range(uniq.shape[0]):
        tok = np.uint64(uniq[t])
        for pos in range(n):
            cells[t, pos] = _smix(np.uint64(pos) * np.uint64(vocab) + tok)


@njit(cache=True, error_model="numpy")
def _null_rows(mode, uniq, vocab, n, stream, rows, w, mant, u, eta, cells):
    """Cost rows for a fresh random key sequence (resample `stream`) over the text's distinct tokens.
    EXP reads the text's `_exp_cell_hashes` from `cells`."""
    nu = uniq.shape[0]
    if mode == EXP:
        for t in range(nu):
            inner = cells[t]
            for pos in range(n):
                w[pos] = max(1.0 - _unif(_smix(stream ^ inner[pos])), _FLOOR)
            _fixed_log(w[:n], mant, rows[t, :n])
        _extend_rows(rows, n)
        return
    for pos in range(n):
        u[pos] = _unif(_mix(stream, np.uint64(pos)))
    # A uniformly random injective map token -> rank: sequential draws with rejection.
    counter = np.uint64(1) << np.uint64(62)
    for t in range(nu):
        while True:
            rank = int(_unif(_mix(stream, counter)) * vocab)
            counter += np.uint64(1)
            if rank >= vocab:
                continue
            used = False
            for s in range(t):
                if eta[s] == rank / (vocab - 1.0):
                    used = True
                    break
            if not used:
                break
        eta[t] = rank / (vocab - 1.0)
    _key_rows(mode, np.empty((1, 1)), u, eta, n, rows, w, mant)


# ---------------------------------------------------------------- alignment kernels
@njit(cache=True, error_model="numpy")
def _edit_block(rows, inv, i0, k, g, j0, prev, cur, left, out):
    """Levenshtein costs A_j for the _LANES shifts j0.. at once: lane b is shift j0 + b.

    prev/cur hold one DP row for all lanes ([(k+1) * _LANES], lane-minor); `left` keeps the
    running left neighbour in its own array so LLVM sees no aliasing and vectorises the lane loop.
    Unsigned indices spare numba's negative-index wraparound, which would also block it.
    """
    for pos in range(k + 1):
        for b in range(_LANES):
            prev[uint64(pos * _LANES + b)] = pos * g
    for i in range(1, k + 1):
        row = rows[inv[i0 + i - 1]]
        for b in range(_LANES):
            left[b] = i * g
            cur[uint64(b)] = i * g
        for pos in range(1, k + 1):
            o = uint64(pos) * _LANES_U
            om = o - _LANES_U
            base = uint64(j0 + pos - 1)
            for b in range(_LANES):
                ub = uint64(b)
                v = min(min(prev[o + ub], left[ub]) + g, prev[om + ub] + row[base + ub])
                cur[o + ub] = v
                left[ub] = v
        prev, cur = cur, prev
    for b in range(_LANES):
        out[b] = prev[uint64(k * _LANES + b)]


@njit(cache=True, error_model="numpy")
def _plain_block(rows, inv, i0, k, n, acc):
    """min over shifts j of sum_l cost(y[i0+l], key[j+l]) (all shifts summed together)."""
    for j in range(n):
        acc[j] = 0
    for pos in range(k):
        row = rows[inv[i0 + pos]][pos:pos + n]
        for j in range(n):
            acc[j] += row[j]
    best = acc[0]
    for j in range(n):
        best = min(best, acc[j])
    return best


@njit(cache=True, error_model="numpy")
def _statistic(rows, inv, m, k, n, g, edit):
    """The exact statistic: min over blocks i0 and all shifts (integer, in 1/SCALE units)."""
    best = np.iinfo(np.int64).max
    if not edit:
        acc = np.empty(n, np.int64)
        for i0 in range(m - k + 1):
            best = min(best, _plain_block(rows, inv, i0, k, n, acc))
        return best
    prev = np.empty((k + 1) * _LANES, np.int32)
    cur = np.empty((k + 1) * _LANES, np.int32)
    left = np.empty(_LANES, np.int32)
    out = np.empty(_LANES, np.int32)
    for i0 in range(m - k + 1):
        for j0 in range(0, n, _LANES):
            _edit_block(rows, inv, i0, k, g, j0, prev, cur, left, out)
            for b in range(min(_LANES, n - j0)):
                best = min(best, out[b])
    return best


@njit(cache=True, error_model="numpy")
def _edit_at_most(rows, inv, i0, k, n, g, threshold, prev, cur, left, out, line):
    """True iff min_j A_j <= threshold for block i0 (exact; see module docstring).

    Branch and bound over ranges of shifts: `shifts.relaxed_bound` bounds a whole range with one DP; ranges
    whose bound exceeds the threshold are dropped, others are halved down to _LANES shifts, which
    are computed exactly. The half with the lower bound is explored first (a hit ends the search
    sooner). Integer costs make the bound exact: no safety margin is needed.
    """
    if n > _LANES and shifts.relaxed_bound(rows, inv, i0, k, g, 0, n - 1 + k, line) > threshold:
        return False
    starts = [0]
    sizes = [n]
    while len(starts) > 0:
        s = starts.pop()
        w = sizes.pop()
        if w <= _LANES:  # ranges above _LANES were bounded when they were pushed
            _edit_block(rows, inv, i0, k, g, s, prev, cur, left, out)
            for b in range(w):
                if out[b] <= threshold:
                    return True
            continue
        half = w // 2
        lo_bound = hi_bound = np.int64(threshold)
        if half > _LANES:
            lo_bound = shifts.relaxed_bound(rows, inv, i0, k, g, s, s + half - 1 + k, line)
        if w - half > _LANES:
            hi_bound = shifts.relaxed_bound(rows, inv, i0, k, g, s + half, s + w - 1 + k, line)
        # Push the worse half first so that the better one is popped next.
        order = ((s, half, lo_bound), (s + half, w - half, hi_bound))
        if hi_bound >= lo_bound:
            order = (order[1], order[0])
        for start, size, bound in order:
            if bound <= threshold:
                starts.append(start)
                sizes.append(size)
    return False


@njit(cache=True, error_model="numpy")
def _null_at_most(rows, inv, m, k, n, g, edit, threshold, kernel, prev, cur, left, out, line, acc, dc):
    """phi(text, this resample's key) <= threshold, by the chosen kernel (SHIFTS: divide and conquer
    over shifts, `decodelab.watermark.shifts`; LANES: branch and bound over blocks of lanes)."""
    for i0 in range(m - k + 1):
        if not edit:
            if _plain_block(rows, inv, i0, k, n, acc) <= threshold:
                return True
        elif kernel == SHIFTS or (kernel == AUTO and _SHIFTS_MIN_K <= k <= _SHIFTS_MAX_K):
            if shifts.at_most(rows, inv, i0, k, n, g, threshold, *dc) <= threshold:
                return True
        elif _edit_at_most(rows, inv, i0, k, n, g, threshold, prev, cur, left, out, line):
            return True
    return False


@njit(cache=True, parallel=True, error_model="numpy")
def _observed_many(mode, offsets, invs, tables, us, etas, n, ks, g, edit):
    count = offsets.shape[0] - 1
    result = np.empty(count, np.int64)
    for t in prange(count):
        a, b = offsets[t], offsets[t + 1]
        k = ks[t]
        nu = tables[t].shape[1] if mode == EXP else etas[t].shape[0]
        rows = np.empty((nu, n + k + _LANES), np.int32)
        _key_rows(mode, tables[t], us[t], etas[t], n, rows, np.empty(n), np.empty(n, np.int64))
        result[t] = _statistic(rows, invs[a:b], b - a, k, n, g, edit)
    return result


@njit(cache=True, parallel=True, error_model="numpy")
def _null_hits(mode, offsets, invs, uniq_flat, uniq_offsets, vocab, n, ks, g, edit, observed, seed,
               texts, r0, r1, workers, kernel):
    """hits[a, r - r0] = phi(text texts[a], resample r) <= observed, for r in [r0, r1).

    One loop per worker over the tasks worker, worker + workers, ... so that the scratch arrays
    (about 0.6 MB for 256 tokens) are allocated once per worker, not once per resample.
    """
    count = texts.shape[0]
    span = r1 - r0
    hits = np.zeros((count, span), np.bool_)
    max_u, max_k = 1, 1
    for a in range(count):
        t = texts[a]
        max_u = max(max_u, uniq_offsets[t + 1] - uniq_offsets[t])
        max_k = max(max_k, ks[t])
    for worker in prange(workers):
        rows_flat = np.empty(max_u * (n + max_k + _LANES), np.int32)
        w, mant, u, eta = np.empty(n), np.empty(n, np.int64), np.empty(n), np.empty(max_u)
        prev = np.empty((max_k + 1) * _LANES, np.int32)
        cur = np.empty((max_k + 1) * _LANES, np.int32)
        left = np.empty(_LANES, np.int32)
        out = np.empty(_LANES, np.int32)
        line = np.empty(n + max_k + _LANES + 1, np.int32)
        acc = np.empty(n, np.int64)
        big = kernel == SHIFTS or (kernel == AUTO and max_k >= _SHIFTS_MIN_K)
        dc = shifts.scratch(n if big else 1, max_k if big else 1)
        cells = np.empty((max_u if mode == EXP else 1, n), np.uint64)
        cells_text = -1  # a worker's tasks run through one text's resamples before the next text's
        for task in range(worker, count * span, workers):
            a = task // span
            r = r0 + task % span
            t = texts[a]
            lo, hi = offsets[t], offsets[t + 1]
            uniq = uniq_flat[uniq_offsets[t]:uniq_offsets[t + 1]]
            k = ks[t]
            rows = rows_flat[:uniq.shape[0] * (n + k + _LANES)].reshape((uniq.shape[0], n + k + _LANES))
            stream = _mix(np.uint64(seed), np.uint64(r + 1))
            if mode == EXP and cells_text != t:
                _exp_cell_hashes(uniq, vocab, n, cells)
                cells_text = t
            _null_rows(mode, uniq, vocab, n, stream, rows, w, mant, u, eta, cells)
            hits[a, r - r0] = _null_at_most(rows, invs[lo:hi], hi - lo, k, n, g, edit, observed[t], kernel, prev, cur,
                                            left, out, line, acc, dc)
    return hits


def sequential_pvalue(hits: list[bool] | np.ndarray, resamples: int, stop_after: int | None) -> float:
    """Monte Carlo p-value from null comparisons in resample order.

    Besag & Clifford (1991), "Sequential Monte Carlo p-values": stop at the resample L that gives
    the h-th hit and report h / L; without h hits in T resamples report (1 + hits) / (T + 1). Both
    are valid p-values; stopping early only coarsens large p-values. stop_after None (or 0) = all T.
    """
    count = 0
    for index, hit in enumerate(hits[:resamples], start=1):
        count += bool(hit)
        if stop_after and count >= stop_after:
            return stop_after / index
    return (1.0 + count) / (resamples + 1.0)


def pvalue_bounds(hits: int, used: int, resamples: int) -> tuple[float, float]:
    """The range of the p-value that all `resamples` would give, knowing `hits` among the first `used`.

    (1 + hits) / (T + 1) if none of the T - used resamples not run is a hit, (1 + hits + T - used) /
    (T + 1) if all are; the two are equal (the p-value itself) when every resample ran.

    Example:
        >>> pvalue_bounds(10, 40, 999)
        (0.011, 0.97)
    """
    low = (1.0 + hits) / (resamples + 1.0)
    return low, low + (resamples - used) / (resamples + 1.0)


# ---------------------------------------------------------------- public fast entry point
def set_workers(workers: int | None) -> None:
    """Threads for the numba kernels (None: all cores numba sees)."""
    set_num_threads(int(workers) if workers else numba_config.NUMBA_NUM_THREADS)


def fixed_gap_cost(gap_cost: float) -> int:
    """The gap cost (the paper's gamma) as the kernels use it: trunc(SCALE * gap_cost)."""
    return int(float(gap_cost) * SCALE)


def _check_range(mode: int, k: int, g: int) -> None:
    per_token = _EXP_MAX_COST if mode == EXP else SCALE
    if k * per_token + (2 * k + 1) * g >= _INT32_MAX:
        raise AlignmentOverflow(f"a block of {k} tokens is too long for the alignment kernels; "
                                "pass a smaller block (sub-block length k)")


def _pack(token_lists: list[np.ndarray]):
    lengths = [len(t) for t in token_lists]
    offsets = np.zeros(len(token_lists) + 1, np.int64)
    offsets[1:] = np.cumsum(lengths)
    uniqs, invs = [], []
    for tokens in token_lists:
        uniq, inv = np.unique(tokens, return_inverse=True)
        uniqs.append(uniq.astype(np.int64))
        invs.append(inv.astype(np.int64))
    uniq_offsets = np.zeros(len(token_lists) + 1, np.int64)
    uniq_offsets[1:] = np.cumsum([len(u) for u in uniqs])
    return offsets, np.concatenate(invs), uniqs, np.concatenate(uniqs), uniq_offsets


class PermutationResult(NamedTuple):
    """`fast_test`'s result, one entry per text: statistic (cost units), p-value, resamples run and
    null hits among them (null statistics <= the observed one)."""

    statistics: np.ndarray
    p_values: np.ndarray
    resamples: np.ndarray
    hits: np.ndarray


def fast_test(token_lists: list[np.ndarray], *, mode: int, edit: bool, key_tables: list[tuple],
              vocab_size: int, n: int, k: int | None, gap_cost: float, resamples: int, seed: int = 0,
              stop_after: int | None = None, workers: int | None = None,
              progress: Callable[[float], None] | None = None, kernel: str = "auto") -> PermutationResult:
    """Observed statistics, permutation-test p-values, resamples run and null hits, for several texts.

    key_tables[t] is (table [n, U_t], u [n], eta [U_t]) for text t's distinct tokens (sorted), from
    the secret key. With `stop_after=h` a text stops resampling at its h-th null hit (see
    `sequential_pvalue`); resamples run in chunks across all unfinished texts in parallel.
    Statistics are returned in cost units (the fixed-point integers divided by SCALE).
    `progress(texts_done)` is called after each chunk (texts done may be fractional: a text that
    still runs counts for the share of its resamples that ran). `kernel` decides the null tests of
    the edit statistic: "shifts" (divide and conquer over shifts), "lanes" (branch and bound over
    blocks of SIMD lanes) or "auto" (shifts for blocks of 128 to 2048 tokens); all give the same p-values.

    Example:
        >>> import numpy as np
        >>> tokens = np.array([3, 1, 4, 1, 5])
        >>> table = np.random.default_rng(0).random((8, 4))   # key at the 4 distinct tokens
        >>> result = fast_test([tokens], mode=EXP, edit=True, key_tables=[(table, None, None)],
        ...                    vocab_size=10, n=8, k=None, gap_cost=0.0, resamples=9)
        >>> 0 < result.p_values[0] <= 1
        True
    """
    set_workers(workers)
    threads = int(workers) if workers else get_num_threads()
    offsets, invs, uniqs, uniq_flat, uniq_offsets = _pack(token_lists)
    ks = np.array([min(k or len(t), len(t)) for t in token_lists], np.int64)
    g = fixed_gap_cost(gap_cost)
    for kk in ks:
        _check_range(mode, int(kk), g)
    from numba.typed import List

    tables, us, etas = List(), List(), List()
    for table, u, eta in key_tables:
        tables.append(np.ascontiguousarray(np.zeros((1, 1)) if table is None else table, np.float64))
        us.append(np.ascontiguousarray(np.zeros(1) if u is None else u, np.float64))
        etas.append(np.ascontiguousarray(np.zeros(1) if eta is None else eta, np.float64))
    if kernel not in KERNELS:
        raise InvalidOption(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    kernel_id = LANES if int(ks.max()) > _SHIFTS_MAX_K else KERNELS[kernel]
    observed = _observed_many(mode, offsets, invs, tables, us, etas, n, ks, g, bool(edit))
    count = len(token_lists)
    hit_count = np.zeros(count, np.int64)
    used = np.zeros(count, np.int64)
    stopped_at = np.zeros(count, np.int64)  # the resample that gave the stop_after-th hit (0: none)
    active = np.arange(count, dtype=np.int64)
    seed = int(seed) & ((1 << 63) - 1)
    r0 = 0
    # Chunks start small and grow: most null texts stop after ~2 * stop_after resamples. Each call
    # holds at most _CHUNK_TASKS (text, resample) pairs so that progress reports come often.
    chunk = min(64, 2 * stop_after) if stop_after else 64
    while r0 < resamples and active.size:
        r1 = min(resamples, r0 + max(1, min(chunk, _CHUNK_TASKS // active.size)))
        block = _null_hits(mode, offsets, invs, uniq_flat, uniq_offsets, int(vocab_size), n, ks, g,
                           bool(edit), observed, seed, active, r0, r1, threads, kernel_id)
        if stop_after:
            running = np.cumsum(block, axis=1) + hit_count[active, None]
            done = running[:, -1] >= stop_after
            first = np.argmax(running >= stop_after, axis=1)  # the stopping resample within the chunk
            stopped_at[active[done]] = r0 + first[done] + 1
            used[active] = np.where(done, r0 + first + 1, r1)
            hit_count[active] = np.minimum(running[:, -1], stop_after)
            active = active[~done]
        else:
            hit_count[active] += block.sum(axis=1)
            used[active] = r1
        r0, chunk = r1, min(2 * chunk, 256)
        if progress is not None:
            progress(float(count - active.size) + (active.size * r0 / resamples if resamples else 0.0))
    pvalues = np.where(stopped_at > 0, (stop_after or 0) / np.maximum(stopped_at, 1),
                       (1.0 + hit_count) / (resamples + 1.0))
    return PermutationResult(observed / SCALE, pvalues, used, hit_count)


# ---------------------------------------------------------------- naive pure-Python oracle
def _naive_costs(mode: int, tokens: list[int], uniq: list[int], table, u, eta, n: int) -> list[list[int]]:
    index = {tok: t for t, tok in enumerate(uniq)}
    rows = []
    for tok in tokens:
        t = index[tok]
        if mode == EXP:
            rows.append([_py_exp_cost(float(table[pos][t])) for pos in range(n)])
        else:
            rows.append([_py_its_cost(mode, float(u[pos]), float(eta[t])) for pos in range(n)])
    return rows


def _naive_levenshtein(cost: list[list[int]], i0: int, j: int, k: int, n: int, gap: int) -> int:
    prev = [pos * gap for pos in range(k + 1)]
    for i in range(1, k + 1):
        cur = [i * gap] + [0] * k
        for pos in range(1, k + 1):
            cur[pos] = min(prev[pos] + gap, cur[pos - 1] + gap, prev[pos - 1] + cost[i0 + i - 1][(j + pos - 1) % n])
        prev = cur
    return prev[k]


def naive_statistic(cost: list[list[int]], k: int, n: int, gap: int, edit: bool) -> int:
    """The statistic by direct enumeration of blocks and shifts (slow; the oracle).

    cost holds fixed-point integer costs and gap is the fixed-point gap cost (`fixed_gap_cost`).
    """
    best = None
    for i0 in range(len(cost) - k + 1):
        for j in range(n):
            if edit:
                value = _naive_levenshtein(cost, i0, j, k, n, gap)
            else:
                value = 0
                for pos in range(k):
                    value += cost[i0 + pos][(j + pos) % n]
            best = value if best is None else min(best, value)
    return best


def _naive_null_key(mode: int, uniq: list[int], vocab: int, n: int, stream: int):
    if mode == EXP:
        return [[_py_unif(_py_mix(stream, pos * vocab + tok)) for tok in uniq] for pos in range(n)], None, None
    u = [_py_unif(_py_mix(stream, pos)) for pos in range(n)]
    eta: list[float] = []
    counter = 1 << 62
    for _ in uniq:
        while True:
            rank = int(_py_unif(_py_mix(stream, counter)) * vocab)
            counter += 1
            if rank < vocab and rank / (vocab - 1.0) not in eta:
                break
        eta.append(rank / (vocab - 1.0))
    return None, u, eta


def naive_test(tokens: list[int], *, mode: int, edit: bool, key_table: tuple, vocab_size: int, n: int,
               k: int | None, gap_cost: float, resamples: int, seed: int = 0,
               stop_after: int | None = None) -> tuple[float, float]:
    """(statistic, p-value) of one text, in plain Python loops: the reference for `fast_test`.

    Example:
        >>> import numpy as np
        >>> table = np.random.default_rng(0).random((8, 4))
        >>> stat, p = naive_test([3, 1, 4, 1, 5], mode=EXP, edit=True, key_table=(table, None, None),
        ...                      vocab_size=10, n=8, k=None, gap_cost=0.0, resamples=9)
    """
    tokens = [int(t) for t in tokens]
    uniq = sorted(set(tokens))
    k = min(k or len(tokens), len(tokens))
    g = fixed_gap_cost(gap_cost)
    table, u, eta = key_table
    observed = naive_statistic(_naive_costs(mode, tokens, uniq, _rows(table), _vec(u), _vec(eta), n),
                               k, n, g, edit)
    hits = []
    for r in range(resamples):
        stream = _py_mix(int(seed) & ((1 << 63) - 1), r + 1)
        table_r, u_r, eta_r = _naive_null_key(mode, uniq, vocab_size, n, stream)
        cost = _naive_costs(mode, tokens, uniq, table_r, u_r, eta_r, n)
        hits.append(naive_statistic(cost, k, n, g, edit) <= observed)
        if stop_after and sum(hits) >= stop_after:
            break
    return observed / SCALE, sequential_pvalue(hits, resamples, stop_after)


def _rows(table):
    return None if table is None else [[float(x) for x in row] for row in np.asarray(table)]


def _vec(values):
    return None if values is None else [float(x) for x in np.asarray(values)]
