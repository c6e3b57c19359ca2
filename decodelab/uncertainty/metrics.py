"""How well an uncertainty score detects wrong answers: AUROC and the prediction rejection ratio.

PRR (Malinin & Gales 2021, "Uncertainty Estimation in Autoregressive Structured Prediction"):
reject answers from the most uncertain down and track the error of the kept ones; PRR is the area
between the random-rejection curve and the score's curve, divided by the same area for the oracle
(reject the wrong answers first): 1 is perfect, 0 is random, negative is worse than random.

Example:
    >>> auroc([0.9, 0.1, 0.8, 0.2], [True, False, True, False])
    1.0
    >>> prr([0.9, 0.1, 0.8, 0.2], [True, False, True, False])
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence


def auroc(uncertainty: Sequence[float], wrong: Sequence[bool]) -> float:
    """P(a wrong answer is more uncertain than a right one), ties count half; nan without both."""
    bad = [u for u, w in zip(uncertainty, wrong) if w]
    good = [u for u, w in zip(uncertainty, wrong) if not w]
    if not bad or not good:
        return float("nan")
    wins = sum((b > g) + 0.5 * (b == g) for b in bad for g in good)
    return wins / (len(bad) * len(good))


def _rejection_area(order: list[int], wrong: Sequence[bool]) -> float:
    """Mean over rejection levels of the error rate of the kept answers (most uncertain rejected first)."""
    n = len(order)
    total = 0.0
    for rejected in range(n):
        kept = order[rejected:]
        total += sum(wrong[i] for i in kept) / len(kept)
    return total / n


def prr(uncertainty: Sequence[float], wrong: Sequence[bool]) -> float:
    """Prediction rejection ratio (see the module docstring); nan when every answer is right or wrong."""
    n = len(wrong)
    if not n or all(wrong) or not any(wrong):
        return float("nan")
    by_score = sorted(range(n), key=lambda i: -uncertainty[i])
    oracle = sorted(range(n), key=lambda i: -int(wrong[i]))
    random_area = sum(wrong) / n
    return (random_area - _rejection_area(by_score, wrong)) / (random_area - _rejection_area(oracle, wrong))


__all__ = ["auroc", "prr"]
