"""Model pairs shared by the speculative tests.

- `target` / `draft`: vocabulary 10, peaked (init_std 0.25): 2-3-token continuations are
  enumerable exactly, for the lossless (chi-square) tests.
- `tiny` / `tiny_draft`: vocabulary 48, for greedy equality tests on longer texts.
"""

from __future__ import annotations

import pytest

import decodelab as dl


@pytest.fixture(scope="module")
def target():
    return dl.load("tiny-random", vocab_size=10, seed=0, init_std=0.25, num_layers=2)


@pytest.fixture(scope="module")
def draft():
    return dl.load("tiny-random", vocab_size=10, seed=3, init_std=0.25, num_layers=1)


@pytest.fixture(scope="module")
def tiny():
    return dl.load("tiny-random", vocab_size=48, seed=0, init_std=0.3, num_layers=4)


@pytest.fixture(scope="module")
def tiny_draft():
    return dl.load("tiny-random", vocab_size=48, seed=7, init_std=0.3, num_layers=1)
