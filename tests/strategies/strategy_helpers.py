"""Helpers of the strategy tests (importable: this folder is on sys.path under pytest)."""

from __future__ import annotations

import torch

PROMPTS = [[1, 4, 5, 6, 7], [1, 9, 2]]


def fresh_logp(lm, ids):
    """Next-token log-probabilities after ids, from a fresh forward without a cache (float64)."""
    with torch.no_grad():
        return lm.model(input_ids=torch.tensor([ids])).logits[0, -1].double().log_softmax(-1)
