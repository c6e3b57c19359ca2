"""Distance to the target's law, computed exactly: zero where a knob makes the method exact, growing
as the knob is loosened; zero for the lossless reference. The negative control shows the distance
sees a change of law (the exact method at another temperature)."""

from __future__ import annotations

import pytest

from decodelab.lossy.law import NextLaws, kl_divergence, kl_to_target, output_law, target_law, total_variation
from decodelab.sampling import SamplingConfig

PROMPT = [1, 5, 6, 5, 6, 5]
SAMPLER = {"temperature": 0.8, "top_k": 4}
FLOAT = 1e-6  # laws come from float32 softmaxes

SWEEPS = [  # (method, knob, values from exact to loose, fixed options)
    ("lossy-relaxed", "neighbours", [0, 1, 4], {"k": 2}),
    ("lossy-judge", "threshold", [1.0, 0.5, 0.1], {"k": 2, "context_tokens": 8}),
    ("lossy-route", "min_confidence", [1.0, 0.5, 0.0], {"k": 2}),
    ("lossy-early-exit", "min_confidence", [1.0, 0.5, 0.0], {"k": 2, "max_layers": 3, "min_layers": 1}),
]


@pytest.fixture(scope="module")
def laws():
    return NextLaws(SamplingConfig(**SAMPLER))


@pytest.fixture(scope="module")
def exact(target, laws):
    return target_law(target, PROMPT, 3, laws=laws)


def _law(target, draft, laws, method, options):
    if method not in ("lossy-early-exit",):
        options = {"draft": draft, **options}
    law, dropped = output_law(target, PROMPT, 3, method, options, laws=laws)
    assert dropped == 0 and sum(law.values()) == pytest.approx(1.0, abs=FLOAT)
    return law


@pytest.mark.parametrize("method,knob,values,fixed", SWEEPS, ids=[s[0] for s in SWEEPS])
def test_distance_is_zero_when_exact_and_grows_when_loosened(target, draft, laws, exact, method, knob, values, fixed):
    tv = [total_variation(_law(target, draft, laws, method, {**fixed, knob: v}), exact) for v in values]
    assert tv[0] < FLOAT
    assert tv[-1] > 0.05 and tv[-1] >= tv[1] - FLOAT
    kl = kl_divergence(_law(target, draft, laws, method, {**fixed, knob: values[0]}), exact)
    assert kl < FLOAT


def test_thinking_gets_closer_with_more_guidance_but_is_never_exact(target, draft, laws, exact):
    tv = [total_variation(_law(target, draft, laws, "lossy-thinking",
                               {"k": 2, "guide_tokens": g, "reflection": "l,s,w"}), exact) for g in (0, 1)]
    assert tv[1] < tv[0] - 0.05 and tv[1] > 0.05


def test_lossless_reference_is_at_zero(target, draft, laws, exact):
    law = _law(target, draft, laws, "draft", {"k": 2})
    assert total_variation(law, exact) < FLOAT and kl_divergence(law, exact) < FLOAT


def test_distance_sees_a_changed_law(target, draft):
    """Negative control: the lossless reference at temperature 1.2 is far from the target at 0.8."""
    hot = NextLaws(SamplingConfig(temperature=1.2, top_k=4))
    law, _ = output_law(target, PROMPT, 3, "draft", {"draft": draft, "k": 2}, laws=hot)
    assert total_variation(law, target_law(target, PROMPT, 3, **SAMPLER)) > 0.05


def test_a_shared_law_cache_gives_the_laws_of_fresh_ones(target, laws):
    """Each build derives new exit models; the cache must never hand one the laws of a freed one
    whose id it reused (a sweep shares one cache)."""
    import gc

    for low in (3, 1, 2):
        options = {"k": 2, "max_layers": 3, "min_layers": low, "min_confidence": 0.0}
        shared, _ = output_law(target, PROMPT, 3, "lossy-early-exit", options, laws=laws)
        gc.collect()
        fresh, _ = output_law(target, PROMPT, 3, "lossy-early-exit", options, laws=NextLaws(SamplingConfig(**SAMPLER)))
        assert total_variation(shared, fresh) < FLOAT


def test_kl_to_target_is_finite_under_pruning_and_equals_the_enumerated_kl(target, draft):
    """Full support (no top-k): KL against the target's exact sequence probabilities equals KL
    against its fully enumerated law, and stays finite when the target's enumeration is pruned
    (where KL against the pruned law is infinite: the negative control)."""
    full = NextLaws(SamplingConfig(temperature=0.8))
    options = {"draft": draft, "k": 2, "neighbours": 4}
    law, _ = output_law(target, PROMPT, 2, "lossy-relaxed", options, laws=full)
    exact = target_law(target, PROMPT, 2, laws=full)
    kl = kl_to_target(law, target, PROMPT, full)
    assert kl == pytest.approx(kl_divergence(law, exact), rel=1e-6) and 0.01 < kl < 10
    pruned = target_law(target, PROMPT, 2, laws=full, min_mass=1e-3)
    assert kl_divergence(law, pruned) == float("inf")
    assert kl_to_target(law, target, PROMPT, full) == pytest.approx(kl, rel=1e-9)
