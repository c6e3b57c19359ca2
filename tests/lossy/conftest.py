"""Models shared by the lossy tests: a 24-token vocabulary (it holds 'y' and 'n', for the judge),
peaked distributions (init_std 0.25) so that 3-token laws are enumerable and tests have power.
The draft is the target's first two layers with its head (correlated with the target, as a
real draft is; an unrelated random draft makes every lossy law nearly disjoint from the target's)."""

from __future__ import annotations

import pytest

import decodelab as dl
from decodelab.speculative import derive_lm


@pytest.fixture(scope="package")
def target():
    return dl.load("tiny-random", vocab_size=24, seed=0, init_std=0.25, num_layers=4)


@pytest.fixture(scope="package")
def draft(target):
    return derive_lm(target, num_layers=2)
