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

Statistical helpers are exposed as a fixture (`gof`), so that test modules in any folder can use
them without importing this file; the exact laws and the chi-square test live in tests/oracle.py.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
from oracle import chi_square_pvalue

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


def sample_counts(samples, num_bins: int) -> np.ndarray:
    return np.bincount(np.asarray(samples, dtype=np.int64).ravel(), minlength=num_bins)


class GoodnessOfFit:
    """The helpers as a fixture: `gof.pvalue(counts, probs)`, `gof.assert_matches(...)`."""

    pass_level = PASS_LEVEL
    fail_level = FAIL_LEVEL
    pvalue = staticmethod(chi_square_pvalue)
    counts = staticmethod(sample_counts)

    @staticmethod
    def assert_matches(samples, probs, what: str = "samples") -> float:
        probs = np.asarray(probs, dtype=np.float64)
        p = chi_square_pvalue(sample_counts(samples, probs.size), probs)
        assert p > PASS_LEVEL, f"{what}: chi-square p = {p:.3g} <= {PASS_LEVEL} against the exact law"
        return p

    @staticmethod
    def assert_rejects(samples, probs, what: str = "broken variant") -> float:
        probs = np.asarray(probs, dtype=np.float64)
        p = chi_square_pvalue(sample_counts(samples, probs.size), probs)
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


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """How many generated hostile inputs the property-based suite threw at each surface."""
    import sys

    module = sys.modules.get("test_hostile_input")
    if module is not None and any(module.CASES.values()):
        cases = ", ".join(f"{surface} {n}" for surface, n in module.CASES.items())
        terminalreporter.write_line(f"hostile-input cases run: {cases}")
