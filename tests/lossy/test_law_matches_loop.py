"""The enumerated law of each lossy method is the law its generation loop samples.

`decodelab.lossy.law.output_law` enumerates a method's drafts, decisions and next tokens from its
own built pieces; here 4000 samples of 3 tokens from `dl.generate` with that method are compared
with it by chi-square. The negative control: the same samples against the law of the same method
at a looser knob (or against the target's law) must fail, so the test can see a wrong law.
"""

from __future__ import annotations

import pytest
from oracle import chi_square_pvalue, sample_continuations

from decodelab.lossy.law import NextLaws, output_law, target_law
from decodelab.sampling import SamplingConfig

PASS_LEVEL = 1e-4
FAIL_LEVEL = 1e-6
SAMPLES = 4000
PROMPT = [1, 5, 6, 5, 6, 5]
SAMPLER = {"temperature": 0.8, "top_k": 4}  # top-k keeps the enumeration small and exact (nothing dropped)
LENGTH = 3
MIN_MASS = 0.0

CASES = [  # (method, options, other options whose law the samples must not fit)
    ("lossy-relaxed", {"k": 2, "neighbours": 2}, {"k": 2, "neighbours": 4}),
    ("lossy-route", {"k": 2, "min_confidence": 0.3}, {"k": 2, "min_confidence": 0.5}),
    ("lossy-thinking", {"k": 2, "guide_tokens": 1, "reflection": "l,s,w"}, {"k": 2, "guide_tokens": 0}),
    ("lossy-early-exit", {"k": 2, "max_layers": 3, "min_layers": 1, "min_confidence": 0.5},
     {"k": 2, "max_layers": 3, "min_layers": 3, "min_confidence": 0.5}),
]


@pytest.fixture(scope="module")
def laws():
    return NextLaws(SamplingConfig(**SAMPLER))


def _options(method, options, draft):
    return options if method == "lossy-early-exit" else {"draft": draft, **options}


@pytest.mark.parametrize("method,options,other", CASES, ids=[c[0] for c in CASES])
def test_loop_samples_the_enumerated_law(target, draft, laws, method, options, other):
    law, dropped = output_law(target, PROMPT, LENGTH, method, _options(method, options, draft),
                              min_mass=MIN_MASS, laws=laws)
    assert dropped == 0
    counts = sample_continuations(target, PROMPT, LENGTH, SAMPLES, seed=3, **SAMPLER,
                                  speculative=method, speculative_options=_options(method, options, draft))
    assert chi_square_pvalue(counts, law) > PASS_LEVEL
    # negative control: the samples are told apart from another knob's law and from the target's
    wrong, _ = output_law(target, PROMPT, LENGTH, method, _options(method, other, draft),
                          min_mass=MIN_MASS, laws=laws)
    assert chi_square_pvalue(counts, wrong) < FAIL_LEVEL
    exact = target_law(target, PROMPT, LENGTH, laws=laws)
    assert chi_square_pvalue(counts, exact) < FAIL_LEVEL


@pytest.mark.slow
def test_judge_loop_samples_the_enumerated_law(target, draft, laws):
    """The judge's verdicts are deterministic given text and span: the law enumerates them."""
    options = {"draft": draft, "k": 2, "threshold": 0.5, "context_tokens": 8}
    law, dropped = output_law(target, PROMPT, LENGTH, "lossy-judge", options, laws=laws)
    assert dropped == 0
    counts = sample_continuations(target, PROMPT, LENGTH, SAMPLES, seed=5, **SAMPLER,
                                  speculative="lossy-judge", speculative_options=options)
    assert chi_square_pvalue(counts, law) > PASS_LEVEL
    assert chi_square_pvalue(counts, target_law(target, PROMPT, LENGTH, laws=laws)) < FAIL_LEVEL
