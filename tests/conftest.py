"""Shared fixtures and statistical helpers for decodelab's tests.

Models:
- `tiny_lm`: tiny-random Llama, vocabulary 16, init_std 0.3, seed 1. Its next-token law after
  the prompt `TINY_PROMPT` is neither flat nor one-hot (entropy ~1.7 nats, EOS ~0.27), so
  sampling bugs change it visibly and EOS matters in multi-token enumerations.
- `tiny_lm_greedy`: same size, seed 2: EOS is unlikely after the prompt, so greedy runs are long.
- `tiny_lm64`: vocabulary 64 with larger init, for engine (KV cache) tests.
- `smol`: the packaged SmolLM2-135M-Instruct at `weights="fp32"` (the float32 model that HF's
  generate and fresh-forward comparisons need), loaded once per session (tests using it are slow).

`DECODELAB_TEST_WEIGHTS=int4` (or int8/bf16) loads every tiny-random model of the run at that
weight precision, to run the engine/speculative/decoding suites on the quantized path.

Statistical helpers are plain functions here and exposed as fixtures (`gof`), so that test
modules in any folder can use them without importing this file.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import scipy.stats

import decodelab as dl

TEST_WEIGHTS = os.environ.get("DECODELAB_TEST_WEIGHTS")
if TEST_WEIGHTS:
    _plain_load = dl.load

    @functools.wraps(_plain_load)
    def _load_at_test_weights(name=None, **kwargs):
        if isinstance(name, str) and name.strip().lower() == "tiny-random":
            kwargs.setdefault("weights", TEST_WEIGHTS)
        return _plain_load(name, **kwargs)

    dl.load = _load_at_test_weights

TINY_PROMPT = [1, 4, 5, 6, 7]  # <bos> e t a o
PASS_LEVEL = 1e-4  # a correct sampler fails a test at this level once in 10,000 runs
FAIL_LEVEL = 1e-6  # a negative control must be rejected at least this strongly


def chisquare_pvalue(observed, expected_probs, *, min_expected: float = 5.0) -> float:
    """Chi-square goodness-of-fit p-value of counts against exact probabilities.

    Bins with expected count below `min_expected` are pooled into one bin (dropped if the pool
    itself is still that small and empty of samples). A sample in a zero-probability bin is
    an impossible outcome and gives p = 0.
    """
    observed = np.asarray(observed, dtype=np.float64).ravel()
    probs = np.asarray(expected_probs, dtype=np.float64).ravel()
    if observed.shape != probs.shape:
        raise ValueError("observed and expected must have the same number of bins")
    if np.any((probs <= 0) & (observed > 0)):
        return 0.0
    probs = probs / probs.sum()
    n = observed.sum()
    expected = probs * n
    big = expected >= min_expected
    obs = list(observed[big])
    exp = list(expected[big])
    pooled_exp = expected[~big].sum()
    pooled_obs = observed[~big].sum()
    if pooled_exp >= min_expected:
        obs.append(pooled_obs)
        exp.append(pooled_exp)
    elif pooled_exp > 0 and obs:  # still too small: merge into the smallest kept bin
        smallest = int(np.argmin(exp))
        obs[smallest] += pooled_obs
        exp[smallest] += pooled_exp
    if len(obs) < 2:
        return 1.0  # a single bin carries no information (all mass on one outcome)
    return float(scipy.stats.chisquare(obs, exp).pvalue)


def sample_counts(samples, num_bins: int) -> np.ndarray:
    return np.bincount(np.asarray(samples, dtype=np.int64).ravel(), minlength=num_bins)


class GoodnessOfFit:
    """The helpers as a fixture: `gof.pvalue(counts, probs)`, `gof.assert_matches(...)`."""

    pass_level = PASS_LEVEL
    fail_level = FAIL_LEVEL
    pvalue = staticmethod(chisquare_pvalue)
    counts = staticmethod(sample_counts)

    @staticmethod
    def assert_matches(samples, probs, what: str = "samples") -> float:
        probs = np.asarray(probs, dtype=np.float64)
        p = chisquare_pvalue(sample_counts(samples, probs.size), probs)
        assert p > PASS_LEVEL, f"{what}: chi-square p = {p:.3g} <= {PASS_LEVEL} against the exact law"
        return p

    @staticmethod
    def assert_rejects(samples, probs, what: str = "broken variant") -> float:
        probs = np.asarray(probs, dtype=np.float64)
        p = chisquare_pvalue(sample_counts(samples, probs.size), probs)
        assert p < FAIL_LEVEL, f"{what}: chi-square p = {p:.3g}, the test cannot see this bug"
        return p


@pytest.fixture(scope="session")
def gof() -> type[GoodnessOfFit]:
    return GoodnessOfFit


@pytest.fixture(scope="session")
def tiny_prompt() -> list[int]:
    return list(TINY_PROMPT)


@pytest.fixture(scope="session")
def tiny_lm() -> dl.LM:
    return dl.load("tiny-random", vocab_size=16, init_std=0.3, seed=1)


@pytest.fixture(scope="session")
def tiny_lm_greedy() -> dl.LM:
    return dl.load("tiny-random", vocab_size=16, init_std=0.3, seed=2)


@pytest.fixture(scope="session")
def tiny_lm64() -> dl.LM:
    return dl.load("tiny-random", vocab_size=64, init_std=0.2, seed=3)


@pytest.fixture(scope="session")
def smol() -> dl.LM:
    """The packaged SmolLM2-135M-Instruct in float32 (about 3 s to load from the safetensors cache)."""
    return dl.load(weights="fp32")


def _load_exact_reference():
    """Load tests/sampling/exact_reference.py once under the name `exact_reference`, so test
    modules in any folder can `import exact_reference` (it is a helper, not a test module)."""
    import importlib.util
    import sys
    from pathlib import Path

    if "exact_reference" in sys.modules:
        return sys.modules["exact_reference"]
    spec = importlib.util.spec_from_file_location("exact_reference", Path(__file__).parent / "sampling" / "exact_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["exact_reference"] = module
    spec.loader.exec_module(module)
    return module


exact_reference = _load_exact_reference()
