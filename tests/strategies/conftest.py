"""Shared fixtures of the strategy tests: two tiny models (helpers: strategy_helpers.py)."""

from __future__ import annotations

import pytest

import decodelab as dl


@pytest.fixture(scope="package")
def lm2():
    """Two layers, moderately peaked: used where entropies must straddle thresholds."""
    return dl.load("tiny-random", vocab_size=64, init_std=0.2, seed=4, num_layers=2)


@pytest.fixture(scope="package")
def lm4():
    """Four layers, flatter: lookahead strategies pause often."""
    return dl.load("tiny-random", vocab_size=64, init_std=0.1, seed=3, num_layers=4)
