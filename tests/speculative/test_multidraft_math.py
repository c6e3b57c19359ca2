"""Multi-draft analysis: the optimal acceptance rate and the closed forms of known verifiers.

The efficient optimum is checked against two independent oracles (all 2^V subsets of the min-cut
form, and the primal LP over couplings) on many small random pairs; a search in the wrong order
must disagree with the oracle somewhere (negative control). Each sequential verifier is
simulated, vectorised over many trials: its acceptance frequency must match the closed form and
its outputs must follow p (chi-square), while a deliberately broken variant must fail the same
chi-square test.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import decodelab as dl
from decodelab.speculative import multidraft_math as md

TRIALS = 40_000


def _random_pairs(count: int, seed: int, max_vocab: int = 8):
    """Random (p, q) pairs with Dirichlet concentrations from peaked to flat, plus zeros."""
    gen = np.random.default_rng(seed)
    out = []
    for i in range(count):
        vocab = int(gen.integers(2, max_vocab + 1))
        alpha = [0.1, 0.5, 1.0, 5.0][i % 4]
        p, q = gen.dirichlet(np.full(vocab, alpha)), gen.dirichlet(np.full(vocab, alpha))
        if i % 5 == 0:  # exact zeros on either side
            p[gen.integers(vocab)] = 0.0
            q[gen.integers(vocab)] = 0.0
        if q.sum() == 0 or p.sum() == 0:
            continue
        out.append((torch.tensor(p / p.sum()), torch.tensor(q / q.sum())))
    return out


def _f64(values):
    return torch.tensor(values, dtype=torch.float64)


def _special_pairs():
    pairs = [
        (_f64([0.25, 0.25, 0.25, 0.25]), _f64([0.25, 0.25, 0.25, 0.25])),  # equal
        (_f64([0.5, 0.5, 0.0, 0.0]), _f64([0.0, 0.0, 0.3, 0.7])),  # disjoint
        (_f64([1.0, 0.0, 0.0]), _f64([0.2, 0.3, 0.5])),  # peaked target
        (_f64([0.2, 0.3, 0.5]), _f64([0.0, 1.0, 0.0])),  # one-hot draft
        (_f64([0.1, 0.2, 0.3, 0.4]), _f64([0.2, 0.4, 0.1, 0.3])),  # ties in p/q
        (_f64([0.4, 0.3, 0.2, 0.1, 0.0]), _f64([0.1, 0.2, 0.3, 0.4, 0.0])),
    ]
    return pairs


CASES = _random_pairs(160, seed=0) + _special_pairs()


# ----------------------------------------------------------------------------- the optimum


def test_optimal_with_one_draft_is_one_minus_total_variation():
    for p, q in CASES:
        tv = 0.5 * float((p - q).abs().sum())
        for replacement in (True, False):
            assert md.optimal_acceptance(p, q, 1, replacement) == pytest.approx(1 - tv, abs=1e-12)
        assert md.chain_acceptance(p, q) == pytest.approx(1 - tv, abs=1e-12)


@pytest.mark.parametrize("replacement", [True, False])
def test_optimal_equals_bruteforce_over_all_subsets(replacement):
    for (p, q), n in zip(CASES, itertools.cycle([1, 2, 3]), strict=False):
        fast = md.optimal_acceptance(p, q, n, replacement)
        brute = md.optimal_acceptance_bruteforce(p, q, n, replacement)
        assert fast == pytest.approx(brute, abs=1e-10), (p, q, n)


@pytest.mark.parametrize("replacement", [True, False])
def test_optimal_equals_linear_program_over_couplings(replacement):
    cases = _random_pairs(24, seed=1, max_vocab=5) + _special_pairs()
    for (p, q), n in zip(cases, itertools.cycle([2, 3, 1]), strict=False):
        lp = md.optimal_acceptance_lp(p, q, n, replacement)
        assert md.optimal_acceptance(p, q, n, replacement) == pytest.approx(lp, abs=1e-7), (p, q, n)


def test_prefix_search_in_the_wrong_order_is_caught_by_the_oracle():
    """Negative control: the same prefix search sorted by q instead of p/q is not optimal."""

    def by_draft_mass(p, q, n):
        order = torch.argsort(q.double(), descending=True)
        pp, qq = p.double()[order], q.double()[order]
        ph = torch.cat([pp.new_zeros(1), torch.cumsum(pp, 0)])
        qh = torch.cat([qq.new_zeros(1), torch.cumsum(qq, 0)])
        return float((ph + 1 - qh**n).min())

    gaps = [
        by_draft_mass(p, q, n) - md.optimal_acceptance_bruteforce(p, q, n, True)
        for (p, q), n in zip(CASES, itertools.cycle([1, 2, 3]), strict=False)
    ]
    assert max(gaps) > 1e-3


def test_special_values():
    equal = torch.full((5,), 0.2, dtype=torch.float64)
    assert md.optimal_acceptance(equal, equal, 3) == pytest.approx(1.0)
    p, q = torch.tensor([0.5, 0.5, 0.0, 0.0]), torch.tensor([0.0, 0.0, 0.3, 0.7])
    for replacement in (True, False):
        assert md.optimal_acceptance(p, q, 3, replacement) == pytest.approx(0.0, abs=1e-15)
    # without replacement, n >= |supp q| drafts cover the whole support: alpha* = p(supp q)
    p, q = torch.tensor([0.3, 0.6, 0.1], dtype=torch.float64), torch.tensor([0.9, 0.1, 0.0], dtype=torch.float64)
    assert md.optimal_acceptance(p, q, 2, replacement=False) == pytest.approx(0.9, abs=1e-12)
    assert md.optimal_acceptance(p, q, 5, replacement=False) == pytest.approx(0.9, abs=1e-12)
    # with replacement token 1 is drafted w.p. 1 - 0.9^2 only: alpha* = 0.3 + 0.19
    assert md.optimal_acceptance(p, q, 2, replacement=True) == pytest.approx(0.49, abs=1e-12)


def test_drafts_without_replacement_never_do_worse_than_with_replacement():
    for (p, q), n in zip(CASES, itertools.cycle([2, 3]), strict=False):
        assert md.optimal_acceptance(p, q, n, False) >= md.optimal_acceptance(p, q, n, True) - 1e-12


@pytest.mark.parametrize(("vocab", "n"), [(8, 3), (30, 3), (12, 4), (7, 5)])
def test_quadrature_for_drafts_without_replacement_matches_enumeration(vocab, n):
    gen = np.random.default_rng(vocab * 10 + n)
    q = torch.tensor(gen.dirichlet(np.full(vocab, 0.3)))
    q = q[q > 0] / q[q > 0].sum()
    quad = md._prefix_all_inside_quadrature(q, n)
    tuples, probs = md.draft_tuples(q, n, replacement=False)
    prefixes = torch.arange(q.numel() + 1)[:, None] > torch.arange(q.numel())[None, :]
    exact = prefixes[:, tuples].all(-1).double() @ probs
    assert torch.allclose(quad[n:], exact[n:], atol=1e-11, rtol=0)


@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_quadrature_matches_the_two_draft_closed_form_on_a_large_vocabulary(temperature):
    gen = torch.Generator().manual_seed(5)
    q = torch.softmax(torch.randn(5000, generator=gen, dtype=torch.float64) * 3 / temperature, 0)
    q = q[q > 0] / q[q > 0].sum()
    quad = md._prefix_all_inside_quadrature(q, 2)
    closed = md._prefix_all_inside_without_replacement(q, 2)
    assert torch.allclose(quad[2:], closed[2:], atol=1e-11, rtol=0)


# ----------------------------------------------------------------------------- verifiers vs optimum


def test_every_verifier_is_below_its_optimum():
    for (p, q), n in zip(CASES, itertools.cycle([1, 2, 3]), strict=False):
        best_iid = md.optimal_acceptance(p, q, n, True)
        best_wor = md.optimal_acceptance(p, q, n, False)
        chain = md.chain_acceptance(p, q)
        rrs = md.recursive_rejection_acceptance(p, q, n, True)
        rsd = md.recursive_rejection_acceptance(p, q, n, False, method="exact")
        spectr = md.spectr_acceptance(p, q, n)
        assert chain <= rrs + 1e-12 and chain <= spectr + 1e-12 and chain <= rsd + 1e-12
        assert rrs <= best_iid + 1e-9 and spectr <= best_iid + 1e-9, (p, q, n)
        assert rsd <= best_wor + 1e-9, (p, q, n)


# ----------------------------------------------------------------------------- simulations

P6 = torch.tensor([0.34, 0.26, 0.16, 0.12, 0.08, 0.04], dtype=torch.float64)
Q6 = torch.tensor([0.04, 0.08, 0.13, 0.2, 0.25, 0.3], dtype=torch.float64)


def _sample(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One draw per row of probs [T, V] (or T draws from one [V] law if given as [T, V] expand)."""
    return torch.multinomial(probs, 1, generator=gen).squeeze(1)


def _assert_rate(accepted: torch.Tensor, rate: float):
    trials = accepted.numel()
    freq = accepted.double().mean().item()
    assert abs(freq - rate) < 5 * math.sqrt(rate * (1 - rate) / trials) + 1e-12, (freq, rate)


def _simulate_rrs(p, q, n, trials, seed, broken=False):
    """SpecInfer multi-round rejection sampling of n i.i.d. drafts; `broken` falls back to p
    instead of the last residual when every draft is rejected."""
    gen = torch.Generator().manual_seed(seed)
    targets = [p]
    for _ in range(n):
        targets.append(md._normalise((targets[-1] - q).clamp_min(0)))
    drafts = torch.multinomial(q.expand(trials, -1), n, replacement=True, generator=gen)
    u = torch.rand(trials, n, generator=gen, dtype=torch.float64)
    out = torch.full((trials,), -1, dtype=torch.long)
    for i in range(n):
        x = drafts[:, i]
        take = (out < 0) & (u[:, i] < targets[i][x] / q[x])
        out = torch.where(take, x, out)
    accepted = out >= 0
    fallback = _sample((p if broken else targets[n]).expand(trials, -1), gen)
    return torch.where(accepted, out, fallback), accepted


def _gumbel_top_n(q, n, trials, gen):
    g = -torch.log(-torch.log(torch.rand(trials, q.numel(), generator=gen, dtype=torch.float64)))
    return torch.topk(torch.log(q) + g, n, dim=-1).indices  # ordered sample without replacement


def _simulate_rsd(p, q, n, trials, seed, broken=False):
    """Recursive rejection over drafts without replacement; `broken` keeps using q (earlier
    drafts not removed) in the acceptance ratio and the residual."""
    gen = torch.Generator().manual_seed(seed)
    drafts = _gumbel_top_n(q, n, trials, gen)
    u = torch.rand(trials, n, generator=gen, dtype=torch.float64)
    target = p.expand(trials, -1).clone()
    removed = torch.zeros(trials, p.numel(), dtype=torch.bool)
    out = torch.full((trials,), -1, dtype=torch.long)
    rows = torch.arange(trials)
    for i in range(n):
        q_i = q.expand(trials, -1) if broken else md._normalise(torch.where(removed, 0.0, q.expand(trials, -1)))
        x = drafts[:, i]
        take = (out < 0) & (u[:, i] < target[rows, x] / q_i[rows, x])
        out = torch.where(take, x, out)
        target = md._normalise((target - q_i).clamp_min(0))
        removed[rows, x] = True
    accepted = out >= 0
    return torch.where(accepted, out, _sample(target, gen)), accepted


def _simulate_spectr(p, q, n, trials, seed, rho):
    gen = torch.Generator().manual_seed(seed)
    drafts = torch.multinomial(q.expand(trials, -1), n, replacement=True, generator=gen)
    u = torch.rand(trials, n, generator=gen, dtype=torch.float64)
    out = torch.full((trials,), -1, dtype=torch.long)
    for i in range(n):
        x = drafts[:, i]
        take = (out < 0) & (u[:, i] < p[x] / (rho * q[x]))
        out = torch.where(take, x, out)
    accepted = out >= 0
    residual = md.spectr_residual(p, q, n, rho)
    return torch.where(accepted, out, _sample(residual.expand(trials, -1), gen)), accepted


@pytest.mark.parametrize("n", [2, 3])
def test_recursive_rejection_sampling_matches_closed_form_and_target(n, gof):
    out, accepted = _simulate_rrs(P6, Q6, n, TRIALS, seed=n)
    _assert_rate(accepted, md.recursive_rejection_acceptance(P6, Q6, n, True))
    gof.assert_matches(out.numpy(), P6.numpy(), "RRS outputs")


def test_recursive_rejection_sampling_without_the_residual_is_detected(gof):
    out, _ = _simulate_rrs(P6, Q6, 2, TRIALS, seed=9, broken=True)
    gof.assert_rejects(out.numpy(), P6.numpy(), "RRS falling back to p")


@pytest.mark.parametrize("n", [2, 3])
def test_recursive_speculative_decoding_matches_closed_form_and_target(n, gof):
    out, accepted = _simulate_rsd(P6, Q6, n, TRIALS, seed=10 + n)
    _assert_rate(accepted, md.recursive_rejection_acceptance(P6, Q6, n, False, method="exact"))
    gof.assert_matches(out.numpy(), P6.numpy(), "RSD outputs")


def test_recursive_speculative_decoding_without_renormalised_drafts_is_detected(gof):
    out, _ = _simulate_rsd(P6, Q6, 3, TRIALS, seed=20, broken=True)
    gof.assert_rejects(out.numpy(), P6.numpy(), "RSD ignoring removed drafts")


def test_rsd_monte_carlo_estimate_matches_exact_enumeration():
    for (p, q), n in zip(_random_pairs(12, seed=3), itertools.cycle([2, 3]), strict=False):
        n_eff = md._effective_n(q, n, False)
        weights = md._rsd_rejection_weights(p, q, n_eff, 20_000, seed=1)
        exact = float(md._rsd_rejected_exact(p, q, n_eff))
        stderr = float(weights.std()) / math.sqrt(weights.numel())
        assert abs(float(weights.mean()) - exact) <= 5 * stderr + 1e-12, (p, q, n)
        mc = md.recursive_rejection_acceptance(p, q, n, False, method="monte-carlo", samples=20_000, seed=1)
        assert mc == pytest.approx(1 - float(weights.mean()), abs=1e-12)


def test_rsd_exact_enumeration_matches_a_direct_sum_over_draft_tuples():
    """Independent check of the path recursion: sum over ordered tuples of the probability
    that every draft is rejected, computed token by token with plain Python."""
    p, q, n = P6.tolist(), Q6.tolist(), 3
    total = 0.0
    for tup in itertools.permutations(range(6), n):
        target, prob, removed = list(p), 1.0, set()
        for x in tup:
            mass = sum(q[y] for y in range(6) if y not in removed)
            q_i = [0.0 if y in removed else q[y] / mass for y in range(6)]
            prob *= q_i[x] * (1 - min(1.0, target[x] / q_i[x]))
            res = [max(0.0, a - b) for a, b in zip(target, q_i, strict=True)]
            target = [r / sum(res) for r in res] if sum(res) > 0 else res
            removed.add(x)
        total += prob
    assert 1 - total == pytest.approx(md.recursive_rejection_acceptance(P6, Q6, n, False, method="exact"), abs=1e-12)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_spectr_matches_closed_form_and_target(n, gof):
    rho = float(md.spectr_rho(P6, Q6, n))
    assert 1.0 < rho < n  # an interior solution: the negative control below has room
    out, accepted = _simulate_spectr(P6, Q6, n, TRIALS, seed=30 + n, rho=rho)
    _assert_rate(accepted, md.spectr_acceptance(P6, Q6, n))
    gof.assert_matches(out.numpy(), P6.numpy(), "SpecTr outputs")


def test_spectr_with_rho_below_the_feasible_one_is_detected(gof):
    n = 3
    rho = 1.0 + 0.5 * (float(md.spectr_rho(P6, Q6, n)) - 1.0)
    out, _ = _simulate_spectr(P6, Q6, n, TRIALS, seed=40, rho=rho)
    gof.assert_rejects(out.numpy(), P6.numpy(), "SpecTr with a too-small rho")


def test_spectr_exact_output_law_is_the_target():
    """Exact law of k-sequential selection: accepted part + all-rejected mass x residual = p."""
    for (p, q), n in zip(CASES, itertools.cycle([1, 2, 3, 4]), strict=False):
        rho = md.spectr_rho(p, q, n)
        accept = torch.minimum(q, p / rho)
        beta = accept.sum()
        law = accept * sum((1 - beta) ** i for i in range(n)) + (1 - beta) ** n * md.spectr_residual(p, q, n, rho)
        assert torch.allclose(law, p, atol=1e-9), (p, q, n)


def test_spectr_rho_is_the_smallest_feasible_value():
    for (p, q), n in zip(CASES[:60], itertools.cycle([2, 3, 4]), strict=False):
        rho = float(md.spectr_rho(p, q, n))
        grid = torch.linspace(1.0, n, 4001, dtype=torch.float64)
        feasible = md._spectr_min_residual(p.expand(grid.numel(), -1), q.expand(grid.numel(), -1), n, grid) >= -1e-13
        first = float(grid[feasible.nonzero()[0, 0]])
        assert rho <= first + 1e-12  # nothing on the grid below rho is feasible...
        assert bool(feasible[grid >= rho + (n - 1) / 4000].all())  # ...and everything above is
    assert float(md.spectr_rho(P6, Q6, 1)) == 1.0


def test_spectr_residual_and_rho_are_batched():
    batch_p, batch_q = torch.stack([P6, Q6, P6]), torch.stack([Q6, P6, P6])
    rho = md.spectr_rho(batch_p, batch_q, 3)
    assert rho.shape == (3,)
    res = md.spectr_residual(batch_p.float(), batch_q.float(), 3, rho)
    assert res.dtype == torch.float32 and res.shape == (3, 6)
    for i in range(3):
        assert float(rho[i]) == pytest.approx(float(md.spectr_rho(batch_p[i], batch_q[i], 3)), abs=1e-12)
        single = md.spectr_residual(batch_p[i], batch_q[i], 3, rho[i])
        assert torch.allclose(res[i].double(), single, atol=1e-6)


# ----------------------------------------------------------------------------- table


def test_acceptance_table_rows_and_markdown():
    pairs = [(P6, Q6), (Q6, P6)]
    rows = md.acceptance_table(pairs, [1, 2, 3])
    assert [r["n"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert row["chain"] == pytest.approx(np.mean([md.chain_acceptance(p, q) for p, q in pairs]))
        assert row["spectr"] == pytest.approx(np.mean([md.spectr_acceptance(p, q, row["n"]) for p, q in pairs]))
        assert max(row["rrs"], row["spectr"]) <= row["optimal"] + 1e-9
        assert row["rsd"] <= row["optimal_wor"] + 1e-9
    assert rows[0]["optimal"] == pytest.approx(rows[0]["chain"])
    text = md.format_acceptance_table(rows)
    assert text.count("\n") == 4 and "| 3 |" in text


def test_acceptance_table_on_tiny_random_model_positions():
    target = dl.load("tiny-random", vocab_size=16, seed=1, init_std=0.3)
    draft = dl.load("tiny-random", vocab_size=16, seed=4, init_std=0.3)
    ids = torch.tensor([[1, 4, 5, 6, 7, 8, 9, 4, 5]])
    with torch.inference_mode():
        p_all = target.model(ids).logits[0].double().softmax(-1)
        q_all = draft.model(ids).logits[0].double().softmax(-1)
    pairs = list(zip(p_all, q_all, strict=True))
    rows = md.acceptance_table(pairs, [1, 2, 4])
    for row in rows:
        assert max(row["chain"], row["rrs"], row["spectr"]) <= row["optimal"] + 1e-9
        assert row["rsd"] <= row["optimal_wor"] + 1e-9
    assert rows[0]["optimal"] == pytest.approx(rows[0]["chain"], abs=1e-12)
    assert rows[2]["optimal"] > rows[1]["optimal"] > rows[0]["optimal"]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("p", "q", "n"),
    [
        (torch.tensor([0.5, 0.6]), torch.tensor([0.5, 0.5]), 2),  # does not sum to 1
        (torch.tensor([1.5, -0.5]), torch.tensor([0.5, 0.5]), 2),  # negative
        (torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.3, 0.5]), 2),  # vocabularies differ
        (torch.tensor([[0.5, 0.5]]), torch.tensor([[0.5, 0.5]]), 2),  # batched where [V] is needed
        (torch.tensor([1, 0]), torch.tensor([0.5, 0.5]), 2),  # integer tensor
        (torch.tensor([float("nan"), 1.0]), torch.tensor([0.5, 0.5]), 2),
        (torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]), 0),  # no drafts
        (torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]), True),  # a bool is not a count
    ],
)
def test_bad_input_raises_a_decodelab_error(p, q, n):
    for call in (md.optimal_acceptance, md.spectr_acceptance, md.recursive_rejection_acceptance):
        with pytest.raises(dl.DecodelabError):
            call(p, q, n)


def test_bad_options_raise():
    with pytest.raises(dl.InvalidOption):
        md.recursive_rejection_acceptance(P6, Q6, 2, False, method="guess")
    with pytest.raises(dl.InvalidOption):
        md.optimal_acceptance_bruteforce(torch.full((20,), 0.05), torch.full((20,), 0.05), 2)
    with pytest.raises(dl.InvalidOption):
        md.spectr_residual(P6, Q6, 2, 0.0)
    with pytest.raises(dl.InvalidOption):
        md.acceptance_table([], [1])
