"""Token-level uncertainty scores: functions of the model's raw next-token distribution.

Each score maps log-probabilities [N, V] and the chosen tokens [N] to one number per token; the
same function fills the record columns of a generation (`dl.generate(..., scores=[...])`, an
observer) and the rows of `dl.score` (teacher-forced), so the two agree by construction.

- `logprob`: log p(token) (nats).
- `entropy`: H(p) = -sum_v p_v log p_v (nats); 0 for a one-hot distribution, log V for a uniform one.
- `max_prob`: max_v p_v, the probability of the top token (whatever was chosen).
- `margin`: p_(1) - p_(2), the gap between the two most probable tokens (Scheffer et al. 2001,
  "Active Hidden Markov Models for Information Extraction": margin sampling), in [0, 1].

Sequence summaries: perplexity exp(-mean logprob) and mean entropy.

Example:
    >>> import torch
    >>> lp = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    >>> round(float(TOKEN_SCORES["margin"](lp, torch.tensor([1]))[0]), 3)
    0.2
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..sampling.processors import entropy as _entropy

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def token_logprob(logprobs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return logprobs.gather(-1, tokens.to(logprobs.device)[:, None]).squeeze(-1)


def token_entropy(logprobs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return _entropy(logprobs).squeeze(-1)


def max_prob(logprobs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return logprobs.max(-1).values.exp()


def margin(logprobs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    top = torch.topk(logprobs, min(2, logprobs.shape[-1]), -1).values.exp()
    return top[:, 0] - top[:, 1] if top.shape[-1] > 1 else top[:, 0]


TOKEN_SCORES: dict[str, ScoreFn] = {
    "logprob": token_logprob,
    "entropy": token_entropy,
    "max_prob": max_prob,
    "margin": margin,
}


def score_columns(names: Sequence[str], logprobs: torch.Tensor, tokens: torch.Tensor) -> dict[str, list[float]]:
    """{name: one float per row} for log-probabilities [N, V] and tokens [N]."""
    logprobs = logprobs.float()
    return {name: TOKEN_SCORES[name](logprobs, tokens).tolist() for name in names}


def perplexity(logprobs: Sequence[float]) -> float:
    """exp(-mean log-probability); nan for no tokens."""
    return math.exp(-sum(logprobs) / len(logprobs)) if logprobs else float("nan")


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


__all__ = ["TOKEN_SCORES", "score_columns", "perplexity", "mean", "token_logprob", "token_entropy", "max_prob",
           "margin"]
