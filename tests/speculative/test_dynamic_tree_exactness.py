"""Dynamic (DySpec-style) draft trees stay exact with a value threshold and adaptive cuts.

Recursive rejection treats a node's children as the first draws of its sibling sequence, so the
tree may not decide how many siblings to keep by looking at the next draw. The tree ranks
candidates by a priority known before their token is drawn; ranking by the drawn token's own
probability (the obvious reading of DySpec) is the negative control: the same test rejects it.
"""

from __future__ import annotations

import pytest
from oracle import chi_square_pvalue, exact_continuations, sample_continuations

import decodelab as dl
from decodelab.speculative import DraftTree
from decodelab.speculative.draft_tree import DraftTree as _DraftTree

PROMPT = [1, 4, 5, 6, 7]
SAMPLER = {"temperature": 0.9}


@pytest.fixture(scope="module")
def models():
    return (dl.load("tiny-random", vocab_size=16, init_std=0.3, seed=1),
            dl.load("tiny-random", vocab_size=16, init_std=0.3, seed=5))


@pytest.fixture(scope="module")
def exact(models):
    return exact_continuations(models[0], PROMPT, 2, **SAMPLER)


@pytest.mark.parametrize("adaptive", [False, True])
def test_dynamic_tree_with_threshold_matches_the_target_law(models, exact, adaptive):
    target, draft = models
    spec = DraftTree(draft, nodes=6, depth=3, min_value=0.05, adaptive=adaptive)
    counts = sample_continuations(target, PROMPT, 2, 3000, seed=17, speculative=spec, **SAMPLER)
    assert chi_square_pvalue(counts, exact) > 1e-4


def test_ranking_siblings_by_their_own_draw_is_detected(models, exact, monkeypatch):
    """Negative control: rank a candidate by the probability of the token it turns out to be."""
    target, draft = models

    def peeking(self, tree, q, parent, i):
        return tree.value(parent) * float(q[tree.orders[parent][i]])

    monkeypatch.setattr(_DraftTree, "_priority", peeking)
    spec = DraftTree(draft, nodes=6, depth=3, min_value=0.05)
    counts = sample_continuations(target, PROMPT, 2, 3000, seed=17, speculative=spec, **SAMPLER)
    assert chi_square_pvalue(counts, exact) < 1e-6
