"""Tree and multi-draft verification is lossless under sampling.

Same method as test_lossless.py: tiny random target/draft pairs with a 10-token vocabulary, the
exact law of 3-token continuations by enumeration, chi-square against samples from each tree
method, and broken verifiers that the same test must catch.
"""

from __future__ import annotations

import pytest
import torch
from oracle import chi_square_pvalue, exact_continuations, sample_continuations

from decodelab.speculative.draft_tree import DraftTree
from decodelab.speculative.multidraft_math import spectr_residual
from decodelab.speculative.token_recycling import TokenRecycling
from decodelab.speculative.tree_verifiers import TreeRejection

PASS_LEVEL = 1e-4
FAIL_LEVEL = 1e-6
SAMPLES = 4000
PROMPT = [1, 5, 6, 5, 6, 5]


def _methods(target, draft):
    return {
        "token-recycling": lambda: TokenRecycling(target, width=4, nodes=10, adaptive=False),
        "rsd": lambda: DraftTree(draft, branching=(3, 2)),
        "rsd-wide": lambda: DraftTree(draft, branching=(6, 3)),
        "specinfer-iid": lambda: DraftTree(draft, branching=(3, 2), siblings="iid"),
        "spectr": lambda: DraftTree(draft, branching=(3, 1), siblings="iid", verifier="kseq"),
        "dyspec": lambda: DraftTree(draft, nodes=6, depth=3, min_value=0.0),
    }


SETTINGS = [{"temperature": 1.0}, {"temperature": 0.7, "top_k": 4}, {"temperature": 1.2, "repetition_penalty": 1.4}]
CASES = [(m, SETTINGS[0]) for m in ("token-recycling", "rsd", "specinfer-iid", "spectr", "dyspec")] + [
    ("token-recycling", SETTINGS[1]), ("rsd", SETTINGS[2]), ("spectr", SETTINGS[1]), ("dyspec", SETTINGS[2]),
]


@pytest.mark.parametrize("method,sampler", CASES,
                         ids=[f"{m}-" + ",".join(f"{k}={v}" for k, v in s.items()) for m, s in CASES])
def test_tree_sampling_matches_target_distribution(target, draft, method, sampler):
    exact = exact_continuations(target, PROMPT, 3, **sampler)
    counts = sample_continuations(target, PROMPT, 3, SAMPLES, seed=13, speculative=_methods(target, draft)[method](),
                                  **sampler)
    assert chi_square_pvalue(counts, exact) > PASS_LEVEL


class KeepRejectedDrafts(TreeRejection):
    """Broken: after a rejection, keeps drawing from p instead of the residual."""

    @staticmethod
    def residual(p, q):
        return p


class IgnoreDrawOrder(TreeRejection):
    """Broken: treats siblings drawn without replacement as if they were i.i.d. (needs many
    siblings to show: with 6 of 10 tokens drafted the error is large)."""

    def __init__(self):
        super().__init__("iid")


class SpecTrWithoutScaling(TreeRejection):
    """Broken: SpecTr's k-sequential selection with rho = 1 (the residual goes negative)."""

    def _kseq(self, p, tokens, q_row, siblings, generator):
        q = q_row[siblings[0]]
        for child in siblings:
            x = int(tokens[child])
            if float(torch.rand((), dtype=torch.float64, generator=generator)) < min(1.0, float(p[x] / q[x])):
                return child, p
        return None, spectr_residual(p, q, len(siblings), 1.0).clamp_min(0)


@pytest.mark.parametrize("method,broken", [("token-recycling", KeepRejectedDrafts), ("rsd-wide", IgnoreDrawOrder),
                                           ("spectr", SpecTrWithoutScaling)])
def test_broken_tree_verifiers_are_detected(target, draft, method, broken):
    sampler = {"temperature": 1.0}
    exact = exact_continuations(target, PROMPT, 3, **sampler)
    spec = _methods(target, draft)[method]()
    spec.verifier = broken() if broken is not SpecTrWithoutScaling else broken("kseq")
    counts = sample_continuations(target, PROMPT, 3, SAMPLES, seed=13, speculative=spec, **sampler)
    assert chi_square_pvalue(counts, exact) < FAIL_LEVEL
