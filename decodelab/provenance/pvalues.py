"""Rank (conformal) p-values: the calibration every provenance test shares.

A statistic `s` (higher = more evidence: a member, a memorised identifier, ...) is compared with
statistics of n texts drawn from the null distribution. If the tested item and the n null items
are exchangeable under the null, then

    p = (1 + #{null statistics >= s}) / (n + 1)

satisfies P(p <= a) <= a for every a, with equality at the grid points a = k/(n+1) when there are
no ties (Vovk et al. 2005, *Algorithmic Learning in a Random World*; the same construction as a
Monte-Carlo permutation test). Ties count against the tested item, so the p-value is conservative.

Example:
    >>> import torch
    >>> rank_p_values(torch.tensor([5.0, 0.5]), torch.tensor([0.0, 1.0, 2.0, 3.0])).tolist()
    [0.2, 0.8]
"""

from __future__ import annotations

import torch

from ..errors import InvalidOption


def rank_p_values(statistics: torch.Tensor, null_statistics: torch.Tensor) -> torch.Tensor:
    """p-value of each statistic against the null sample (higher statistic = more evidence)."""
    null = torch.as_tensor(null_statistics, dtype=torch.float64).flatten()
    stats = torch.as_tensor(statistics, dtype=torch.float64)
    if null.numel() == 0:
        raise InvalidOption("the null (reference) sample is empty", param="reference", code="too_few")
    if torch.isnan(null).any() or torch.isnan(stats).any():
        raise InvalidOption("a test statistic is NaN (a text with no scored tokens?)")
    ordered = null.sort().values
    below = torch.searchsorted(ordered, stats, right=False)  # null values < s
    at_least = null.numel() - below
    return (1 + at_least).double() / (null.numel() + 1)


def min_p_value(n_null: int) -> float:
    """The smallest p-value a rank test against `n_null` null statistics can give."""
    return 1.0 / (n_null + 1)


__all__ = ["rank_p_values", "min_p_value"]
