"""Test statistics of the distortion-free watermarks and their permutation test, fast and naive.

Kuditipudi, Thickstun, Hashimoto & Liang (2023), "Robust Distortion-free Watermarks for Language
Models". A text y (m tokens) is compared with the key sequence xi (n positions): for every block
y[i:i+k] and every cyclic shift j of the key, a cost d(y[i:i+k], xi[j:j+k]) is computed and the
statistic is the minimum over (i, j). The costs are

- EXP:       d = sum_l log(1 - xi_{j+l}[y_{i+l}])                      (more negative = watermarked)
- ITS:       d = -sum_l (u_{j+l} - 1/2) (eta(pi(y_{i+l})) - 1/2)       (eta = rank / (V-1))
- EXP-edit:  Levenshtein cost with base cost log(1 - xi_l[y_i]) and gap cost gamma
- ITS-edit:  Levenshtein cost with base cost |u_l - eta(pi(y_i))| and gap cost gamma

The p-value is the permutation test of the paper: recompute the statistic against T fresh
random key sequences xi' and return (1 + #{phi(y, xi') <= phi(y, xi)}) / (T + 1). It is exact
for any T under H0 (text independent of the key).

What is exact here: the fast path (numba) computes the same floating-point numbers as the naive
pure-Python oracle `naive_statistic` / `naive_pvalue` (same operation order), so p-values agree
exactly. The fast path decides "phi(y, xi') <= observed" for each resample without computing
every shift: neighbouring shifts satisfy A_{j+1} <= A_j + Delta_j (drop key column j, pay at most
gamma + max(-gamma, gamma - min_i c(i, j)), add a gap at the end), so a few exact shifts bound all
others from below; shifts are computed exactly (16 at a time, vectorised) until either one is
<= observed or every remaining lower bound exceeds it. Resampled keys come from a counter-based
SplitMix64 stream (seed, resample, position, token), identical in both implementations.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
from numba import config as numba_config
from numba import njit, prange, set_num_threads
from numba.core.errors import NumbaTypeSafetyWarning

# prange indices are unsigned inside numba's parallel loops; the casts back are safe here.
warnings.filterwarnings("ignore", category=NumbaTypeSafetyWarning)

EXP, ITS, ITS_EDIT = 0, 1, 2  # cost modes; EXP-edit is EXP costs with edit=True

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_MASK = (1 << 64) - 1
_MINMAX = {"nnan", "ninf"}  # lets min() compile to vminsd; no reassociation or FMA contraction
_BLOCK = 16  # shifts computed together in the decision kernel (one AVX-512 double vector x 2)


# ---------------------------------------------------------------- counter-based uniforms
@njit(cache=True, inline="always")
def _smix(x):
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def _mix(a, b):
    return _smix(a ^ _smix(b))


@njit(cache=True, inline="always")
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


# ---------------------------------------------------------------- fast kernels (numba)
@njit(cache=True)
def _costs(mode, inv, table, u, eta, n, out):
    """out[i, pos] = base cost of text position i against key position pos (computed once per
    distinct token, then copied to the positions where it occurs)."""
    distinct = eta.shape[0] if mode != 0 else table.shape[1]
    per_token = np.empty((distinct, n))
    for t in range(distinct):
        if mode == 0:
            for pos in range(n):
                per_token[t, pos] = math.log1p(-table[pos, t])
        elif mode == 1:
            for pos in range(n):
                per_token[t, pos] = -(u[pos] - 0.5) * (eta[t] - 0.5)
        else:
            for pos in range(n):
                per_token[t, pos] = abs(u[pos] - eta[t])
    for i in range(inv.shape[0]):
        out[i, :] = per_token[inv[i]]


@njit(cache=True)
def _null_key(mode, uniq, vocab, n, stream, table, u, eta):
    """A fresh random key sequence for the text's distinct tokens (resample `stream`)."""
    nu = uniq.shape[0]
    if mode == 0:
        for pos in range(n):
            base = np.uint64(pos) * np.uint64(vocab)
            for t in range(nu):
                table[pos, t] = _unif(_mix(stream, base + np.uint64(uniq[t])))
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


@njit(cache=True)
def _extend(cost, i0, k, n, width):
    """Rows i0..i0+k-1 of cost with columns extended cyclically to `width`."""
    out = np.empty((k, width))
    for i in range(k):
        for c in range(width):
            out[i, c] = cost[i0 + i, c % n]
    return out


@njit(cache=True, fastmath=_MINMAX)
def _edit_shifts(ext, k, gamma, j0, width, prev, cur, out):
    """Levenshtein costs A_j for shifts j0..j0+width-1, vectorised across shifts."""
    for pos in range(k + 1):
        for b in range(width):
            prev[pos, b] = pos * gamma
    for i in range(1, k + 1):
        row = ext[i - 1]
        for b in range(width):
            cur[0, b] = i * gamma
        for pos in range(1, k + 1):
            base = j0 + pos - 1
            for b in range(width):
                v = min(prev[pos, b] + gamma, cur[pos - 1, b] + gamma)
                cur[pos, b] = min(v, prev[pos - 1, b] + row[base + b])
        prev, cur = cur, prev
    for b in range(width):
        out[b] = prev[k, b]


@njit(cache=True)
def _plain_block(cost, i0, k, n):
    """min over shifts of sum_l cost[i0+l, (j+l) mod n]."""
    best = np.inf
    for j in range(n):
        s = 0.0
        for pos in range(k):
            s += cost[i0 + pos, (j + pos) % n]
        if s < best:
            best = s
    return best


@njit(cache=True)
def _statistic(cost, k, n, gamma, edit):
    """The exact statistic: min over blocks i0 and all shifts."""
    m = cost.shape[0]
    best = np.inf
    if not edit:
        for i0 in range(m - k + 1):
            v = _plain_block(cost, i0, k, n)
            if v < best:
                best = v
        return best
    prev = np.empty((k + 1, n))
    cur = np.empty((k + 1, n))
    out = np.empty(n)
    for i0 in range(m - k + 1):
        ext = _extend(cost, i0, k, n, n + k)
        _edit_shifts(ext, k, gamma, 0, n, prev, cur, out)
        for j in range(n):
            if out[j] < best:
                best = out[j]
    return best


@njit(cache=True, fastmath=_MINMAX)
def _relaxed(ext, k, gamma, c0, c1, row):
    """Lower bound on A_j for every shift j with [j, j+k) inside [c0, c1): the same alignment with
    free key gaps before and after (start anywhere in row 0, end anywhere in row k)."""
    width = c1 - c0
    for c in range(width + 1):
        row[c] = 0.0
    for i in range(1, k + 1):
        cost = ext[i - 1]
        diag = row[0]
        left = i * gamma
        row[0] = left
        for c in range(1, width + 1):
            up = row[c]
            left = min(min(up + gamma, left + gamma), diag + cost[c0 + c - 1])
            diag = up
            row[c] = left
    best = np.inf
    for c in range(width + 1):
        if row[c] < best:
            best = row[c]
    return best


@njit(cache=True)
def _edit_at_most(cost, i0, k, n, gamma, threshold, prev, cur, out):
    """True iff min_j A_j <= threshold for block i0 (exact; see module docstring).

    Branch and bound over ranges of shifts: `_relaxed` bounds a whole range with one DP; ranges
    whose bound exceeds the threshold are dropped, others are halved down to `_BLOCK` shifts,
    which are computed exactly.
    """
    width = out.shape[0]
    ext = _extend(cost, i0, k, n, n + k + width)
    row = np.empty(n + k + width + 1)
    margin = 1e-7 * (1.0 + abs(threshold))
    starts = [0]
    sizes = [n]
    while len(starts) > 0:
        s = starts.pop()
        w = sizes.pop()
        if w <= width:
            _edit_shifts(ext, k, gamma, s, width, prev, cur, out)
            for b in range(w):
                if out[b] <= threshold:
                    return True
            continue
        if _relaxed(ext, k, gamma, s, s + w - 1 + k, row) > threshold + margin:
            continue
        half = w // 2
        starts.append(s + half)
        sizes.append(w - half)
        starts.append(s)
        sizes.append(half)
    return False


@njit(cache=True)
def _null_at_most(cost, k, n, gamma, edit, threshold, prev, cur, out):
    m = cost.shape[0]
    for i0 in range(m - k + 1):
        if edit:
            if _edit_at_most(cost, i0, k, n, gamma, threshold, prev, cur, out):
                return True
        elif _plain_block(cost, i0, k, n) <= threshold:
            return True
    return False


@njit(cache=True, parallel=True)
def _observed_many(mode, offsets, invs, tables, us, etas, n, ks, gamma, edit):
    count = offsets.shape[0] - 1
    result = np.empty(count)
    for t in prange(count):
        a, b = offsets[t], offsets[t + 1]
        cost = np.empty((b - a, n))
        _costs(mode, invs[a:b], tables[t], us[t], etas[t], n, cost)
        result[t] = _statistic(cost, ks[t], n, gamma, edit)
    return result


@njit(cache=True, parallel=True)
def _null_hits(mode, offsets, invs, uniq_flat, uniq_offsets, vocab, n, ks, gamma, edit, observed, seed,
               texts, r0, r1):
    """hits[a, r - r0] = phi(text texts[a], resample r) <= observed, for r in [r0, r1)."""
    count = texts.shape[0]
    span = r1 - r0
    hits = np.zeros((count, span), np.bool_)
    width = _BLOCK if n >= _BLOCK else n
    for task in prange(count * span):
        a = task // span
        r = r0 + task % span
        t = texts[a]
        lo, hi = offsets[t], offsets[t + 1]
        uniq = uniq_flat[uniq_offsets[t]:uniq_offsets[t + 1]]
        k = ks[t]
        table = np.empty((n, uniq.shape[0]))
        u = np.empty(n)
        eta = np.empty(uniq.shape[0])
        stream = _mix(np.uint64(seed), np.uint64(r + 1))
        _null_key(mode, uniq, vocab, n, stream, table, u, eta)
        cost = np.empty((hi - lo, n))
        _costs(mode, invs[lo:hi], table, u, eta, n, cost)
        prev = np.empty((k + 1, width))
        cur = np.empty((k + 1, width))
        out = np.empty(width)
        hits[a, r - r0] = _null_at_most(cost, k, n, gamma, edit, observed[t], prev, cur, out)
    return hits


def sequential_pvalue(hits: list[bool] | np.ndarray, resamples: int, stop_after: int | None) -> float:
    """Monte Carlo p-value from null comparisons in resample order.

    Besag & Clifford (1991), "Sequential Monte Carlo p-values": stop at the resample L that gives
    the h-th hit and report h / L; without h hits in T resamples report (1 + hits) / (T + 1). Both
    are valid p-values; stopping early only coarsens large p-values.
    """
    count = 0
    for index, hit in enumerate(hits[:resamples], start=1):
        count += bool(hit)
        if stop_after and count >= stop_after:
            return stop_after / index
    return (1.0 + count) / (resamples + 1.0)


# ---------------------------------------------------------------- public fast entry point
def set_workers(workers: int | None) -> None:
    """Threads for the numba kernels (None: all cores numba sees)."""
    set_num_threads(int(workers) if workers else numba_config.NUMBA_NUM_THREADS)


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


def fast_test(token_lists: list[np.ndarray], *, mode: int, edit: bool, key_tables: list[tuple],
              vocab_size: int, n: int, k: int | None, gamma: float, resamples: int, seed: int = 0,
              stop_after: int | None = None, workers: int | None = None,
              chunk: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observed statistics, permutation-test p-values and resamples used, for several texts.

    key_tables[t] is (table [n, U_t], u [n], eta [U_t]) for text t's distinct tokens (sorted), from
    the secret key. With `stop_after=h` a text stops resampling at its h-th null hit (see
    `sequential_pvalue`); resamples run in chunks across all unfinished texts in parallel.
    """
    set_workers(workers)
    offsets, invs, uniqs, uniq_flat, uniq_offsets = _pack(token_lists)
    ks = np.array([min(k or len(t), len(t)) for t in token_lists], np.int64)
    from numba.typed import List

    tables, us, etas = List(), List(), List()
    for table, u, eta in key_tables:
        tables.append(np.ascontiguousarray(np.zeros((1, 1)) if table is None else table, np.float64))
        us.append(np.ascontiguousarray(np.zeros(1) if u is None else u, np.float64))
        etas.append(np.ascontiguousarray(np.zeros(1) if eta is None else eta, np.float64))
    observed = _observed_many(mode, offsets, invs, tables, us, etas, n, ks, float(gamma), bool(edit))
    count = len(token_lists)
    hits = np.zeros((count, resamples), np.bool_)
    used = np.zeros(count, np.int64)
    active = np.arange(count, dtype=np.int64)
    seed = int(seed) & ((1 << 63) - 1)
    r0 = 0
    # Chunks start small and double: most null texts stop after ~2 * stop_after resamples.
    chunk = min(chunk, 2 * stop_after) if stop_after else chunk
    while r0 < resamples and active.size:
        r1 = min(resamples, r0 + chunk)
        block = _null_hits(mode, offsets, invs, uniq_flat, uniq_offsets, int(vocab_size), n, ks, float(gamma),
                           bool(edit), observed, seed, active, r0, r1)
        hits[active, r0:r1] = block
        used[active] = r1
        if stop_after:
            active = active[hits[active, :r1].sum(axis=1) < stop_after]
        r0, chunk = r1, min(2 * chunk, 256)
    pvalues = np.array([sequential_pvalue(hits[t, :used[t]], resamples, stop_after) for t in range(count)])
    return observed, pvalues, used


# ---------------------------------------------------------------- naive pure-Python oracle
def _naive_costs(mode: int, tokens: list[int], uniq: list[int], table, u, eta, n: int) -> list[list[float]]:
    index = {tok: t for t, tok in enumerate(uniq)}
    rows = []
    for tok in tokens:
        t = index[tok]
        if mode == EXP:
            rows.append([math.log1p(-float(table[pos][t])) for pos in range(n)])
        elif mode == ITS:
            rows.append([-(float(u[pos]) - 0.5) * (float(eta[t]) - 0.5) for pos in range(n)])
        else:
            rows.append([abs(float(u[pos]) - float(eta[t])) for pos in range(n)])
    return rows


def _naive_levenshtein(cost: list[list[float]], i0: int, j: int, k: int, n: int, gamma: float) -> float:
    prev = [pos * gamma for pos in range(k + 1)]
    for i in range(1, k + 1):
        cur = [i * gamma] + [0.0] * k
        for pos in range(1, k + 1):
            cur[pos] = min(prev[pos] + gamma, cur[pos - 1] + gamma, prev[pos - 1] + cost[i0 + i - 1][(j + pos - 1) % n])
        prev = cur
    return prev[k]


def naive_statistic(cost: list[list[float]], k: int, n: int, gamma: float, edit: bool) -> float:
    """The statistic by direct enumeration of blocks and shifts (slow; the oracle)."""
    best = math.inf
    for i0 in range(len(cost) - k + 1):
        for j in range(n):
            if edit:
                value = _naive_levenshtein(cost, i0, j, k, n, gamma)
            else:
                value = 0.0
                for pos in range(k):
                    value += cost[i0 + pos][(j + pos) % n]
            best = min(best, value)
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
               k: int | None, gamma: float, resamples: int, seed: int = 0,
               stop_after: int | None = None) -> tuple[float, float]:
    """(statistic, p-value) of one text, in plain Python loops: the reference for `fast_test`."""
    tokens = [int(t) for t in tokens]
    uniq = sorted(set(tokens))
    k = min(k or len(tokens), len(tokens))
    table, u, eta = key_table
    observed = naive_statistic(_naive_costs(mode, tokens, uniq, _rows(table), _vec(u), _vec(eta), n),
                               k, n, gamma, edit)
    hits = []
    for r in range(resamples):
        stream = _py_mix(int(seed) & ((1 << 63) - 1), r + 1)
        table_r, u_r, eta_r = _naive_null_key(mode, uniq, vocab_size, n, stream)
        cost = _naive_costs(mode, tokens, uniq, table_r, u_r, eta_r, n)
        hits.append(naive_statistic(cost, k, n, gamma, edit) <= observed)
        if stop_after and sum(hits) >= stop_after:
            break
    return observed, sequential_pvalue(hits, resamples, stop_after)


def _rows(table):
    return None if table is None else [[float(x) for x in row] for row in np.asarray(table)]


def _vec(values):
    return None if values is None else [float(x) for x in np.asarray(values)]


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, numba_config.NUMBA_NUM_THREADS))
