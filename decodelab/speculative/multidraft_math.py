"""Multi-draft speculative sampling, analysed: the optimal acceptance rate and closed forms.

Papers:
- Z. Hu, T. Zheng, V. Viswanathan, Z. Chen, R. A. Rossi, Y. Wu, D. Manocha, H. Huang (2025),
  "Towards Optimal Multi-draft Speculative Decoding" (ICLR 2025): the optimal acceptance rate.
- Z. Sun, A. T. Suresh, J. H. Ro, A. Beirami, H. Jain, F. Yu (2023), "SpecTr: Fast Speculative
  Decoding via Optimal Transport" (NeurIPS 2023): k-sequential selection.
- X. Miao et al. (2024), "SpecInfer" (ASPLOS 2024): multi-round (recursive) rejection sampling of
  i.i.d. drafts; W. Jeon et al. (2024), "Recursive Speculative Decoding: Accelerating LLM Inference
  via Sampling Without Replacement": the same recursion over drafts drawn without replacement.

The idea. n drafts x_1..x_n are drawn from the draft law q (i.i.d., or without replacement); a
verifier outputs one token y whose law must be exactly the target p, and wins when y is one of
the drafts. The best any verifier can do is an optimal transport (a linear program over
couplings of the draft tuple and y). Its dual is a minimum cut: with Q(H) the probability that
all drafts lie in H,

    alpha* = min over H subset of V of [ p(H) + 1 - Q(H) ].

Efficient computation (Hu et al.'s subset-selection view, our own code): sort the draft's support
by p(x)/q(x) increasing; the optimal H is one of the |supp q| + 1 prefixes of that order.
Exchange argument (with replacement, Q(H) = q(H)^n): at an optimal H of mass s, removing x in H
cannot help, so p(x) <= s^n - (s - q(x))^n <= n s^(n-1) q(x); adding y outside cannot help, so
p(y) >= (s + q(y))^n - s^n >= n s^(n-1) q(y); hence p(y)/q(y) >= p(x)/q(x). Without replacement
Q(H) is not a function of q(H) but has the same increasing-marginal-gain-per-unit-mass property
(the paper's q-convexity); the tests check the prefix claim against all 2^V subsets and against
the LP. Tokens with q = 0 are never drafted and never belong to an optimal H.

What is exact:
- `optimal_acceptance` with replacement: exact (O(V log V)).
- without replacement: the prefix search is exact; Q(prefix) is closed-form for n <= 2, and for
  n >= 3 it is a one-dimensional integral (exponential-race representation of sequential
  sampling) computed by Gauss-Legendre on geometric panels: ~1e-14 against enumeration on
  ordinary drafts; the absolute error grows like 1e-16/lambda, lambda = the draft mass outside
  its n-1 most likely tokens (~1e-7 when lambda ~ 1e-9, i.e. a draft with top probability
  0.999999999), because exponents of size t ~ 1/lambda lose their last digits.
- `optimal_acceptance_bruteforce` (all subsets) and `optimal_acceptance_lp` (scipy linprog over
  the coupling) are exact oracles for tiny V.
- `chain_acceptance`, `recursive_rejection_acceptance(replacement=True)`, `spectr_acceptance`:
  exact closed forms. `recursive_rejection_acceptance(replacement=False)` depends on which tokens
  were drawn: exact by enumerating draft tuples when that is small, otherwise a Monte-Carlo
  estimate (sequential importance sampling of the all-rejected path, unbiased; see below).
- `spectr_rho`: bisection to 1e-12 for the smallest rho in [1, n] whose residual is
  non-negative everywhere; at that rho SpecTr's output law is exactly p.

Without replacement, fewer than n tokens may have q > 0; then only |supp q| drafts exist and
every function here uses n' = min(n, |supp q|).

Example:
    >>> import torch
    >>> p = torch.tensor([0.5, 0.3, 0.2]); q = torch.tensor([0.2, 0.3, 0.5])
    >>> round(chain_acceptance(p, q), 4)
    0.7
    >>> optimal_acceptance(p, q, 2) >= spectr_acceptance(p, q, 2) - 1e-12
    True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ..errors import InvalidOption

__all__ = [
    "InvalidDistribution",
    "optimal_acceptance", "optimal_acceptance_bruteforce", "optimal_acceptance_lp", "draft_tuples",
    "chain_acceptance", "recursive_rejection_acceptance",
    "spectr_rho", "spectr_acceptance", "spectr_residual",
    "acceptance_table", "format_acceptance_table",
]

_ATOL = 1e-6  # how far from 1 a probability vector's sum may be before it is rejected
_EXACT_STATES = 2_000_000  # enumerate draft tuples (x vocabulary) up to this many entries


class InvalidDistribution(InvalidOption):
    """A target/draft pair that is not a pair of probability vectors over one vocabulary."""


# ----------------------------------------------------------------------------- input checks


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidOption(f"the number of drafts n must be a positive integer, got {n!r}")
    return int(n)


def _as_probs(x: torch.Tensor, name: str, *, batched: bool = False) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if not x.is_floating_point():
        raise InvalidDistribution(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.dim() == 0 or (not batched and x.dim() != 1):
        raise InvalidDistribution(f"{name} must be a {'[..., V]' if batched else '[V]'} tensor, got shape {tuple(x.shape)}")
    x64 = x.to(torch.float64)
    if not torch.isfinite(x64).all() or (x64 < 0).any():
        raise InvalidDistribution(f"{name} must be finite and non-negative")
    sums = x64.sum(-1)
    if ((sums - 1).abs() > _ATOL).any():
        raise InvalidDistribution(f"{name} must sum to 1 over the vocabulary (got {sums.min().item():.6g})")
    return x64 / sums.unsqueeze(-1)  # exact renormalisation: the maths below assumes sum 1


def _pair(p: torch.Tensor, q: torch.Tensor, *, batched: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    p64, q64 = _as_probs(p, "p (target)", batched=batched), _as_probs(q, "q (draft)", batched=batched)
    if p64.shape[-1] != q64.shape[-1]:
        raise InvalidDistribution(f"p and q have different vocabularies: {p64.shape[-1]} vs {q64.shape[-1]}")
    if batched:
        try:
            p64, q64 = torch.broadcast_tensors(p64, q64)
        except RuntimeError as err:
            raise InvalidDistribution(f"p and q do not broadcast: {tuple(p64.shape)} vs {tuple(q64.shape)}") from err
    elif p64.shape != q64.shape:
        raise InvalidDistribution(f"p and q must have the same shape, got {tuple(p64.shape)} and {tuple(q64.shape)}")
    return p64, q64


def _effective_n(q: torch.Tensor, n: int, replacement: bool) -> int:
    # without replacement only |supp q| distinct drafts exist
    return n if replacement else min(n, int((q > 0).sum()))


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """x / sum(x) along the last axis; rows of zeros stay zero (no residual mass left)."""
    total = x.sum(-1, keepdim=True)
    return torch.where(total > 0, x / total.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(x))


# ----------------------------------------------------------------------------- optimal rate


def optimal_acceptance(p: torch.Tensor, q: torch.Tensor, n: int, replacement: bool = True) -> float:
    """The best acceptance rate of any lossless verifier of n drafts from q for target p.

    alpha* = min_H [p(H) + 1 - Q(H)], searched over the prefixes of the draft's support sorted by
    p/q (Hu et al. 2025); `replacement=False` means drafts are drawn without replacement
    (sequential sampling, e.g. Gumbel-top-n). For n = 1 this is sum(min(p, q)).

    Example:
        >>> p = torch.tensor([0.6, 0.4, 0.0]); q = torch.tensor([0.0, 0.5, 0.5])
        >>> round(optimal_acceptance(p, q, 1), 6), round(optimal_acceptance(p, q, 3, replacement=False), 6)
        (0.4, 0.4)
    """
    n = _check_n(n)
    p64, q64 = _pair(p, q)
    n_eff = _effective_n(q64, n, replacement)
    support = torch.nonzero(q64 > 0).squeeze(-1)
    ps, qs = p64[support], q64[support]
    order = torch.argsort(ps / qs, stable=True)
    ps, qs = ps[order], qs[order]
    p_prefix = torch.cat([ps.new_zeros(1), torch.cumsum(ps, 0)])
    # q mass outside each prefix, from a suffix sum so that tiny complements stay accurate
    outside = torch.cat([torch.flip(torch.cumsum(torch.flip(qs, [0]), 0), [0]), qs.new_zeros(1)])
    if replacement:
        not_all_inside = -torch.expm1(n_eff * torch.log1p(-outside.clamp(max=1.0)))  # 1 - (1 - r)^n
    else:
        not_all_inside = 1.0 - _prefix_all_inside_without_replacement(qs, n_eff)
    objective = p_prefix + not_all_inside
    return float(objective.min().clamp(0.0, 1.0))


def _prefix_all_inside_without_replacement(qs: torch.Tensor, n: int) -> torch.Tensor:
    """Q(H_i) = P(all n draws without replacement lie in H_i) for every prefix H_i = qs[:i].

    `qs` is the (positive) draft mass in prefix order; returns m + 1 values for i = 0..m.
    """
    m = qs.numel()
    s = torch.cat([qs.new_zeros(1), torch.cumsum(qs, 0)])
    if n == 1:
        out = s
    elif n == 2:
        # Q(H) = sum_{x in H} q(x) (q(H) - q(x)) / (1 - q(x)) (first draw x, second from q
        # without x) = q(H) - r(H) sum_{x in H} q(x) / (1 - q(x)) with r(H) = 1 - q(H): this form
        # has no cancellation between large terms when some q(x) is close to 1
        outside = torch.cat([torch.flip(torch.cumsum(torch.flip(qs, [0]), 0), [0]), qs.new_zeros(1)])
        before = s[:-1]  # exclusive prefix sums
        others = before + outside[1:]  # 1 - q(x) as a sum of the other masses: exact even for q(x) ~ 1
        odds = torch.cat([qs.new_zeros(1), torch.cumsum(qs / others, 0)])
        out = s - outside * odds
    else:
        out = _prefix_all_inside_quadrature(qs, n)
    out = out.clamp(0.0, 1.0)
    out[: min(n, m + 1)] = 0.0  # fewer than n tokens cannot hold n distinct drafts
    out[m] = 1.0  # the whole support
    return out


def _gauss_legendre_panels(t_max: float, nodes: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    x, w = np.polynomial.legendre.leggauss(nodes)
    edges = [0.0, 0.5, 1.0]
    while edges[-1] < t_max:
        edges.append(edges[-1] * 2.0)  # geometric panels: the integrand mixes rates from 1 down to lambda
    ts, ws = [], []
    for a, b in itertools.pairwise(edges):
        ts.append(0.5 * (b - a) * x + 0.5 * (b + a))
        ws.append(0.5 * (b - a) * w)
    return torch.from_numpy(np.concatenate(ts)), torch.from_numpy(np.concatenate(ws))


def _prefix_all_inside_quadrature(qs: torch.Tensor, n: int, nodes: int = 32) -> torch.Tensor:
    """Q(H_i) for all prefixes by the exponential race behind sequential sampling.

    Draws without replacement are the first n arrivals of independent exponential clocks with
    rates q(x). All n lie in H iff at least n clocks of H ring before the first clock of the
    complement, which rings at T ~ Exp(r), r = 1 - q(H). So

        1 - Q(H) = E[P(N_H(T) < n)] = int_0^inf r e^{-t} sum_{k<n} e_k(w(t)) dt,

    with w_x(t) = exp(q(x) t) - 1 over x in H and e_k the elementary symmetric polynomials
    (e^{-r t} e^{-q(H) t} = e^{-t}). e_k over every prefix is a cumulative recursion
    e_k(i) = sum_{j<=i} w_j e_{k-1}(j-1), done in log space with logcumsumexp: all terms are
    positive, so nothing cancels. The integrand is a mix of exponentials e^{-c t} with
    c in [lambda, 1], lambda = 1 - (n - 1 largest q), hence geometric panels up to ~60/lambda.
    """
    m = qs.numel()
    outside = torch.cat([torch.flip(torch.cumsum(torch.flip(qs, [0]), 0), [0])[1:], qs.new_zeros(1)])  # r_i, i=1..m
    largest = torch.sort(qs, descending=True).values
    lam = float(largest[n - 1:].sum())  # 1 - mass of the n-1 largest, summed without cancellation
    tail = 60.0 + (n - 1) * math.log(max(m, 2))  # the Poisson-binomial tail has <= C(m, n-1) terms
    t, w = _gauss_legendre_panels(tail / lam, nodes)
    t, w = t.to(qs), w.to(qs)
    log_r = torch.log(outside)  # -inf for the full support: Q = 1 there
    integral = torch.zeros(m, dtype=qs.dtype)
    chunk = max(1, (1 << 21) // max(m, 1))
    for start in range(0, t.numel(), chunk):  # chunks over quadrature nodes, vectorised over V
        tc = t[start:start + chunk, None]
        qt = qs[None, :] * tc
        log_w = qt + torch.log(-torch.expm1(-qt))  # log(exp(q t) - 1), stable for small and large q t
        log_e = torch.zeros_like(log_w)  # log e_0 = 0 for every prefix
        log_sum = log_e.clone()
        for k in range(1, n):
            empty = 0.0 if k == 1 else -math.inf  # e_{k-1} of the empty prefix
            shifted = torch.cat([torch.full_like(log_e[:, :1], empty), log_e[:, :-1]], dim=1)
            log_e = torch.logcumsumexp(log_w + shifted, dim=1)
            log_sum = torch.logaddexp(log_sum, log_e)
        integrand = torch.exp(log_r[None, :] - tc + log_sum)
        integral += (w[start:start + chunk, None] * integrand).sum(0)
    return torch.cat([qs.new_zeros(1), 1.0 - integral])


def draft_tuples(q: torch.Tensor, n: int, replacement: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ordered draft tuple with positive probability, and its probability (tiny V only).

    Returns (tuples [T, n'] long, probs [T] float64). Without replacement the i-th draft comes
    from q with earlier drafts removed and renormalised.

    Example:
        >>> tuples, probs = draft_tuples(torch.tensor([0.5, 0.5]), 2, replacement=False)
        >>> tuples.tolist(), probs.tolist()
        ([[0, 1], [1, 0]], [0.5, 0.5])
    """
    n = _check_n(n)
    q64 = _as_probs(q, "q (draft)")
    n_eff = _effective_n(q64, n, replacement)
    support = torch.nonzero(q64 > 0).squeeze(-1)
    if support.numel() ** n_eff > _EXACT_STATES:
        raise InvalidOption(f"{support.numel()}^{n_eff} draft tuples are too many to enumerate")
    tuples = torch.zeros(1, 0, dtype=torch.long)
    probs = torch.ones(1, dtype=torch.float64)
    for _ in range(n_eff):
        avail = q64.expand(tuples.shape[0], -1).clone()
        if not replacement:
            avail.scatter_(1, tuples, 0.0)
        avail = _normalise(avail)[:, support]  # [T, S]
        probs = (probs[:, None] * avail).reshape(-1)
        tuples = torch.cat([tuples.repeat_interleave(support.numel(), 0), support.repeat(tuples.shape[0])[:, None]], 1)
        keep = probs > 0
        tuples, probs = tuples[keep], probs[keep]
    return tuples, probs


def _all_inside(q: torch.Tensor, n: int, replacement: bool, masks: torch.Tensor) -> torch.Tensor:
    """Q(H) for each subset mask [S, V] by enumerating draft tuples."""
    if replacement:
        return (masks.to(q.dtype) @ q) ** n
    tuples, probs = draft_tuples(q, n, replacement=False)
    inside = masks[:, tuples].all(-1)  # [S, T]
    return inside.to(probs.dtype) @ probs


def optimal_acceptance_bruteforce(p: torch.Tensor, q: torch.Tensor, n: int, replacement: bool = True) -> float:
    """alpha* = min over all 2^V subsets H of [p(H) + 1 - Q(H)]: the oracle for V <= ~12.

    Example:
        >>> p = torch.tensor([0.5, 0.3, 0.2]); q = torch.tensor([0.2, 0.3, 0.5])
        >>> abs(optimal_acceptance_bruteforce(p, q, 2) - optimal_acceptance(p, q, 2)) < 1e-12
        True
    """
    n = _check_n(n)
    p64, q64 = _pair(p, q)
    vocab = p64.numel()
    if vocab > 16:
        raise InvalidOption(f"brute force enumerates 2^V subsets; V = {vocab} is too large")
    codes = torch.arange(1 << vocab)
    masks = ((codes[:, None] >> torch.arange(vocab)[None, :]) & 1).bool()
    objective = masks.to(torch.float64) @ p64 + 1.0 - _all_inside(q64, n, replacement, masks)
    return float(objective.min().clamp(0.0, 1.0))


def optimal_acceptance_lp(p: torch.Tensor, q: torch.Tensor, n: int, replacement: bool = True) -> float:
    """alpha* as the primal LP: max P(Y in drafts) over couplings of (draft tuple, Y) with
    marginals (Q, p), solved by scipy's HiGHS (tiny V and n only).

    Example:
        >>> p = torch.tensor([0.5, 0.3, 0.2]); q = torch.tensor([0.2, 0.3, 0.5])
        >>> abs(optimal_acceptance_lp(p, q, 2, replacement=False) - optimal_acceptance(p, q, 2, False)) < 1e-8
        True
    """
    import scipy.optimize
    import scipy.sparse

    n = _check_n(n)
    p64, q64 = _pair(p, q)
    tuples, probs = draft_tuples(q64, n, replacement)
    num_t, vocab = tuples.shape[0], p64.numel()
    if num_t * vocab > 200_000:
        raise InvalidOption(f"the LP would have {num_t * vocab} variables; use optimal_acceptance")
    # variable (t, y) at index t * V + y
    var = np.arange(num_t * vocab)
    rows_t, rows_y = var // vocab, num_t + var % vocab
    a_eq = scipy.sparse.csr_matrix(
        (np.ones(2 * var.size), (np.concatenate([rows_t, rows_y]), np.concatenate([var, var]))),
        shape=(num_t + vocab, num_t * vocab),
    )
    b_eq = np.concatenate([probs.numpy(), p64.numpy()])
    member = np.zeros((num_t, vocab))
    np.put_along_axis(member, tuples.numpy(), 1.0, axis=1)
    # the last marginal row is implied by the others (both sides sum to 1); HiGHS reports the
    # full system infeasible when the two sums differ by rounding, so it is left out
    result = scipy.optimize.linprog(-member.ravel(), A_eq=a_eq[:-1], b_eq=b_eq[:-1], bounds=(0, None), method="highs")
    if result.status != 0:  # pragma: no cover - a feasible bounded LP always solves
        raise RuntimeError(f"linprog failed: {result.message}")
    return float(min(1.0, max(0.0, -result.fun)))


# ----------------------------------------------------------------------------- known verifiers


def chain_acceptance(p: torch.Tensor, q: torch.Tensor) -> float:
    """Acceptance of one draft under rejection sampling: sum(min(p, q)) = 1 - TV(p, q).

    Example:
        >>> round(chain_acceptance(torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])), 6)
        0.6
    """
    p64, q64 = _pair(p, q)
    return float(torch.minimum(p64, q64).sum())


def recursive_rejection_acceptance(p: torch.Tensor, q: torch.Tensor, n: int, replacement: bool = True, *,
                                   method: str = "auto", samples: int = 4000, seed: int = 0) -> float:
    """P(some draft is accepted) under recursive rejection sampling of n drafts.

    With replacement (SpecInfer): drafts i.i.d. from q; round i accepts x_i w.p.
    min(1, p_i(x_i)/q(x_i)), else p_{i+1} = norm(max(0, p_i - q)). The rounds are independent,
    so P(all rejected) = prod_i (1 - sum min(p_i, q)): exact closed form.

    Without replacement (Jeon et al., RSD): q_i is q with earlier drafts removed and
    renormalised, p_{i+1} = norm(max(0, p_i - q_i)). P(all rejected) sums, over draft paths,
    prod_i max(0, q_i - p_i)(x_i). `method="exact"` enumerates the paths (small V);
    `method="monte-carlo"` samples x_i from norm(max(0, q_i - p_i)) and averages the weights
    prod_i sum(max(0, q_i - p_i)) (unbiased, `samples` paths, seeded); "auto" picks exact when
    at most ~2e6 path entries are needed.

    Example:
        >>> p = torch.tensor([0.5, 0.3, 0.2]); q = torch.tensor([0.2, 0.3, 0.5])
        >>> round(recursive_rejection_acceptance(p, q, 1), 6)
        0.7
    """
    n = _check_n(n)
    p64, q64 = _pair(p, q)
    if method not in ("auto", "exact", "monte-carlo"):
        raise InvalidOption(f"method must be 'auto', 'exact' or 'monte-carlo', got {method!r}")
    if replacement:
        rejected = 1.0
        target = p64
        for _ in range(n):
            rejected *= float(1.0 - torch.minimum(target, q64).sum())
            target = _normalise((target - q64).clamp_min(0.0))
        return min(1.0, max(0.0, 1.0 - rejected))
    n_eff = _effective_n(q64, n, replacement)
    support = int((q64 > 0).sum())
    if method == "auto":
        method = "exact" if support ** max(n_eff - 1, 0) * p64.numel() <= _EXACT_STATES else "monte-carlo"
    if method == "exact":
        rejected = float(_rsd_rejected_exact(p64, q64, n_eff))
    else:
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise InvalidOption(f"samples must be a positive integer, got {samples!r}")
        rejected = float(_rsd_rejection_weights(p64, q64, n_eff, samples, seed).mean())
    return min(1.0, max(0.0, 1.0 - rejected))


def _rsd_step(target: torch.Tensor, removed: torch.Tensor, q: torch.Tensor):
    """One RSD round for a batch of states: the draft law q_i, the all-rejected branch mass
    max(0, q_i - p_i) and the next target norm(max(0, p_i - q_i))."""
    q_i = _normalise(torch.where(removed, torch.zeros_like(target), q.expand_as(target)))
    reject_branch = (q_i - target).clamp_min(0.0)
    return q_i, reject_branch, _normalise((target - q_i).clamp_min(0.0))


def _rsd_rejected_exact(p: torch.Tensor, q: torch.Tensor, n: int) -> torch.Tensor:
    weight = torch.ones(1, dtype=p.dtype)
    target = p[None, :].clone()
    removed = torch.zeros(1, p.numel(), dtype=torch.bool)
    for round_ in range(n):
        _, branch, nxt = _rsd_step(target, removed, q)
        if round_ == n - 1:  # the last rejection needs no new states
            return (weight * branch.sum(-1)).sum()
        states, tokens = torch.nonzero(branch > 0, as_tuple=True)  # expand only paths with mass
        weight = weight[states] * branch[states, tokens]
        target = nxt[states]
        removed = removed[states].clone()
        removed[torch.arange(tokens.numel()), tokens] = True
    return weight.sum()  # n = 0: nothing drafted, all "rejected"


def _rsd_rejection_weights(p: torch.Tensor, q: torch.Tensor, n: int, samples: int, seed: int) -> torch.Tensor:
    """Per-path importance weights whose mean is P(all n RSD rounds reject) (unbiased)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    chunk = max(1, min(samples, (1 << 22) // max(p.numel(), 1)))
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        weight = torch.ones(size, dtype=p.dtype)
        target = p.expand(size, -1).clone()
        removed = torch.zeros(size, p.numel(), dtype=torch.bool)
        for _ in range(n):
            _, branch, nxt = _rsd_step(target, removed, q)
            mass = branch.sum(-1)
            weight = weight * mass
            # inverse-CDF draw from branch / mass (cheaper than multinomial on [T, V]); a dead
            # path (mass 0, weight 0) draws some token, which no longer matters
            cdf = torch.cumsum(branch, -1)
            u = (1.0 - torch.rand(size, 1, generator=gen, dtype=p.dtype)) * mass[:, None]  # in (0, mass]
            token = torch.searchsorted(cdf, u).squeeze(1).clamp_max(p.numel() - 1)
            target = nxt
            removed[torch.arange(size), token] = True
        out.append(weight)
    return torch.cat(out)


def _spectr_c(beta: torch.Tensor, n: int) -> torch.Tensor:
    # (1 - (1 - beta)^n) / beta written as a finite geometric sum: no 0/0 at beta = 0
    return sum((1.0 - beta) ** i for i in range(n))


def _spectr_min_residual(p: torch.Tensor, q: torch.Tensor, n: int, rho: torch.Tensor) -> torch.Tensor:
    accept = torch.minimum(q, p / rho[..., None])
    c = _spectr_c(accept.sum(-1), n)
    return (p - accept * c[..., None]).amin(-1)


def spectr_rho(p: torch.Tensor, q: torch.Tensor, n: int, *, tol: float = 1e-12) -> torch.Tensor:
    """SpecTr's rho for n i.i.d. drafts: the smallest rho in [1, n] whose all-rejected residual
    p - min(q, p/rho) (1 - (1 - beta)^n) / beta is non-negative everywhere (bisection).

    Batched over leading dims: p, q are [..., V]; returns rho of shape [...] (float64). At
    interior solutions this is the root of 1 - (1 - beta(rho))^n = rho beta(rho) from the
    paper; rho = n is always feasible, and n = 1 gives rho = 1 (plain rejection sampling).

    Example:
        >>> p = torch.tensor([0.5, 0.3, 0.2]); q = torch.tensor([0.2, 0.3, 0.5])
        >>> 1.0 <= float(spectr_rho(p, q, 3)) <= 3.0
        True
    """
    n = _check_n(n)
    p64, q64 = _pair(p, q, batched=True)
    slack = -1e-13  # rounding: a residual entry of -1e-16 is a zero

    def feasible(rho: torch.Tensor) -> torch.Tensor:
        return _spectr_min_residual(p64, q64, n, rho) >= slack

    lo = torch.ones(p64.shape[:-1], dtype=torch.float64, device=p64.device)
    hi = torch.full_like(lo, float(n))
    done = feasible(lo)
    hi = torch.where(done, lo, hi)
    while bool(((hi - lo) > tol).any()):
        mid = 0.5 * (lo + hi)
        ok = feasible(mid)
        hi = torch.where(ok, mid, hi)
        lo = torch.where(ok, lo, mid)
    return hi


def spectr_acceptance(p: torch.Tensor, q: torch.Tensor, n: int) -> float:
    """SpecTr's acceptance 1 - (1 - beta)^n with beta = sum min(q, p/rho) at `spectr_rho`.

    Example:
        >>> p = torch.tensor([0.5, 0.3, 0.2]); q = torch.tensor([0.2, 0.3, 0.5])
        >>> round(spectr_acceptance(p, q, 1), 6)
        0.7
    """
    n = _check_n(n)
    p64, q64 = _pair(p, q)
    rho = spectr_rho(p64, q64, n)
    beta = float(torch.minimum(q64, p64 / rho).sum())
    return min(1.0, max(0.0, 1.0 - (1.0 - beta) ** n))


def spectr_residual(p: torch.Tensor, q: torch.Tensor, n: int, rho: torch.Tensor | float) -> torch.Tensor:
    """The law SpecTr samples from when all n drafts are rejected, [..., V] in p's dtype.

    norm(max(0, p - min(q, p/rho) (1 - (1 - beta)^n) / beta)); at a feasible rho (see
    `spectr_rho`) the max(0, .) only removes rounding. Where nothing is left to sample (p = q
    at rho = 1) it returns p, which is never used. Batched over leading dims; `rho` is a float
    or a tensor of the leading shape.

    Example:
        >>> p = torch.tensor([0.5, 0.3, 0.2]); q = torch.tensor([0.2, 0.3, 0.5])
        >>> res = spectr_residual(p, q, 2, spectr_rho(p, q, 2))
        >>> bool(torch.isclose(res.sum(), torch.tensor(1.0)))
        True
    """
    n = _check_n(n)
    p64, q64 = _pair(p, q, batched=True)
    rho64 = torch.as_tensor(rho, dtype=torch.float64, device=p64.device).expand(p64.shape[:-1])
    if (rho64 <= 0).any() or not torch.isfinite(rho64).all():
        raise InvalidOption("rho must be positive and finite")
    accept = torch.minimum(q64, p64 / rho64[..., None])
    c = _spectr_c(accept.sum(-1), n)
    residual = _normalise((p64 - accept * c[..., None]).clamp_min(0.0))
    empty = residual.sum(-1, keepdim=True) == 0
    dtype = p.dtype if isinstance(p, torch.Tensor) and p.is_floating_point() else torch.float64
    device = p.device if isinstance(p, torch.Tensor) else torch.device("cpu")
    return torch.where(empty, p64, residual).to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------- report table

TABLE_COLUMNS = ("chain", "rrs", "rsd", "spectr", "optimal", "optimal_wor")
_TABLE_HEADERS = {
    "n": "drafts n",
    "chain": "chain (1 draft)",
    "rrs": "RRS, i.i.d.",
    "rsd": "RSD, w/o repl.",
    "spectr": "SpecTr",
    "optimal": "optimal, i.i.d.",
    "optimal_wor": "optimal, w/o repl.",
}


def acceptance_table(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], n_values: Sequence[int], *,
                     samples: int = 2000, seed: int = 0) -> list[dict[str, float]]:
    """Mean acceptance per verify over (target p, draft q) pairs, one row per n.

    Columns: chain (one draft, the same for every n), RRS with replacement, RSD without
    replacement (exact or Monte Carlo, see `recursive_rejection_acceptance`), SpecTr, and the
    optimal rates for i.i.d. drafts (the bound for RRS and SpecTr) and for drafts without
    replacement (the bound for RSD). `format_acceptance_table` renders the rows as Markdown.

    Example:
        >>> pairs = [(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.3, 0.5]))]
        >>> rows = acceptance_table(pairs, [1, 2])
        >>> rows[0]["n"], round(rows[0]["chain"], 6)
        (1, 0.7)
    """
    pairs = list(pairs)
    if not pairs:
        raise InvalidOption("acceptance_table needs at least one (p, q) pair")
    ns = [_check_n(n) for n in n_values]
    if not ns:
        raise InvalidOption("acceptance_table needs at least one n")
    checked = [_pair(p, q) for p, q in pairs]
    chain = float(np.mean([chain_acceptance(p, q) for p, q in checked]))
    rows = []
    for n in ns:
        cols = {name: [] for name in TABLE_COLUMNS}
        for p, q in checked:
            cols["chain"].append(chain)
            cols["rrs"].append(recursive_rejection_acceptance(p, q, n, True))
            cols["rsd"].append(recursive_rejection_acceptance(p, q, n, False, samples=samples, seed=seed))
            cols["spectr"].append(spectr_acceptance(p, q, n))
            cols["optimal"].append(optimal_acceptance(p, q, n, True))
            cols["optimal_wor"].append(optimal_acceptance(p, q, n, False))
        rows.append({"n": n, **{name: float(np.mean(vals)) for name, vals in cols.items()}, "positions": len(checked)})
    return rows


def format_acceptance_table(rows: Sequence[dict[str, float]], digits: int = 3) -> str:
    """Markdown for `acceptance_table` rows.

    Example:
        >>> print(format_acceptance_table([{"n": 2, "chain": 0.5, "rrs": 0.6, "rsd": 0.65,
        ...     "spectr": 0.62, "optimal": 0.7, "optimal_wor": 0.75}]).splitlines()[0])
        | drafts n | chain (1 draft) | RRS, i.i.d. | RSD, w/o repl. | SpecTr | optimal, i.i.d. | optimal, w/o repl. |
    """
    keys = ["n", *TABLE_COLUMNS]
    lines = ["| " + " | ".join(_TABLE_HEADERS[k] for k in keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [str(int(row["n"]))] + [f"{row[k]:.{digits}f}" for k in TABLE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
