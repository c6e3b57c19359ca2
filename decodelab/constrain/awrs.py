"""Adaptive weighted rejection sampling (AWRS) of one constrained token.

Lipkin, Loula, Vieira, Cotterell, Mansinghka, O'Donnell, et al., 2025, "Fast Controlled
Generation from Language Models with Adaptive Weighted Rejection Sampling" (COLM 2025).

Idea. Instead of evaluating the constraint on the whole vocabulary (a mask), draw a token
from the model's distribution p, check only that token, and if the constraint rejects it,
remove it and draw again (sampling without replacement, here by Gumbel keys). The first
accepted token is an *exact* draw from the locally constrained law p(x)1[x allowed]/Z. Few
checks are needed when the model mostly agrees with the constraint.

Weight. A second round of the same rejection loop (with the first round's rejections already
removed) yields the paper's importance weight

    w = (1 - sum_{r in R1} p(r)) / (|R1| + |R2| + 1),

R1, R2 the rejected tokens of the two rounds: an unbiased estimate of the local normaliser
Z = sum of p over the allowed tokens. Exact: the token's law and E[w] = Z (both tested by
enumeration). These properly weighted (token, w) pairs are what SMC (`smc.py`) needs to target
the *global* conditional p(x | x satisfies the constraint).

`p` is the sampler-processed distribution (temperature, top-k, ...) *before* the constraint, so
with truncating samplers (top-k/top-p) AWRS targets "truncate, then constrain", while masking
truncates after constraining; with temperature only, both target the same local law.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..decoding.protocols import Proposal, Verdict

if TYPE_CHECKING:
    from ..decoding.loop import DecodeState

NEG_INF = float("-inf")


@dataclass
class AWRSDraw:
    """One AWRS draw: the token (None when no token with p > 0 is allowed: Z = 0), the log
    weight (log of the estimate of Z), constraint checks made, and the first round's
    rejections (for diagnostics and tests)."""

    token: int | None
    log_weight: float
    checks: int
    rejected_first: int
    rejected_mass_first: float


def awrs_sample(logprobs: torch.Tensor, check: Callable[[int], bool], generator: torch.Generator | None = None,
                *, gumbels: torch.Tensor | None = None, weight: bool = True) -> AWRSDraw:
    """Draw one token of `logprobs` [V] (normalised, -inf = impossible) that `check` accepts.

    `gumbels` [2, V] may hold the two rounds' Gumbel noise (for batched callers); otherwise it
    is drawn from `generator`. `weight=False` runs only the first round (a plain exact draw).

    Example:
        >>> lp = torch.tensor([0.5, 0.3, 0.2]).log()
        >>> d = awrs_sample(lp, lambda t: t != 0, torch.Generator().manual_seed(0))
        >>> d.token in (1, 2), d.checks >= 2
        (True, True)
    """
    logp = logprobs.detach().double().cpu().clone()
    if gumbels is None:
        u = torch.rand(2 if weight else 1, logp.shape[0], dtype=torch.float64, generator=generator)
        gumbels = -torch.log(-torch.log(u.clamp_min(1e-300)))
    token: int | None = None
    rejected_first: list[float] = []
    rejections = checks = 0
    for round_ in range(2 if weight else 1):
        keys = logp + gumbels[round_].to(logp)
        found = _first_allowed(keys, check)
        checks += len(found[1]) + (found[0] is not None)
        for t in found[1]:
            rejections += 1
            if round_ == 0:
                rejected_first.append(float(logp[t]))
            logp[t] = NEG_INF  # adaptive: a rejected token is never proposed again
        if round_ == 0:
            if found[0] is None:
                return AWRSDraw(None, NEG_INF, checks, rejections, 1.0)
            token = found[0]
    mass = math.fsum(math.exp(x) for x in rejected_first)
    if not weight:
        return AWRSDraw(token, 0.0, checks, rejections, mass)
    log_w = math.log(max(1.0 - mass, 1e-300)) - math.log(rejections + 1)
    return AWRSDraw(token, log_w, checks, len(rejected_first), mass)


def _first_allowed(keys: torch.Tensor, check: Callable[[int], bool]) -> tuple[int | None, list[int]]:
    """Walk tokens in decreasing key order (chunks of top-k, never the whole vocabulary unless
    everything is rejected) until `check` accepts one; returns (token, rejected tokens)."""
    keys = keys.clone()
    rejected: list[int] = []
    chunk = 8
    while True:
        values, ids = keys.topk(min(chunk, keys.shape[0]))
        for value, t in zip(values.tolist(), ids.tolist()):
            if value == NEG_INF:
                return None, rejected
            if check(t):
                return t, rejected
            rejected.append(t)
        keys[ids] = NEG_INF
        chunk *= 4


def greedy_allowed(logits: torch.Tensor, check: Callable[[int], bool]) -> tuple[int | None, int]:
    """temperature=0: the highest-scoring allowed token, checking candidates in score order."""
    token, rejected = _first_allowed(logits.detach().double().cpu(), check)
    return token, len(rejected) + (token is not None)


class AWRSVerifier:
    """The loop's verifier for plain decoding under a constraint, by AWRS instead of a mask.

    Needs the `GrammarConstraint` attached to the state (it owns the matchers and receives each
    token's weight and check count); it never asks the constraint for a full mask.
    """

    def __init__(self, constraint):
        self.constraint = constraint

    def verify(self, state: DecodeState, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        history = state.history()
        if state.config.greedy:
            # the processors without greedy's one-hot: candidates are checked in score order
            scores = target_logits[:, 0].float()
            for processor in state.processors:
                scores = processor(scores, history)
        else:
            logprobs = state.process(target_logits[:, 0], history).log_softmax(-1)
        tokens = []
        eos = min(state.lm.eos_token_ids) if state.lm.eos_token_ids else 0
        for b, i in enumerate(state.active):
            check = _bound_check(self.constraint, b)
            if state.config.greedy:
                token, checks = greedy_allowed(scores[b], check)
                log_w = 0.0
            else:
                draw = awrs_sample(logprobs[b], check, state.generators[i])
                token, checks, log_w = draw.token, draw.checks, draw.log_weight
            if token is None:
                # Z = 0: no allowed token has positive probability under the sampler
                self.constraint.failed[i] = "no allowed token has positive probability (AWRS found none)"
                token = eos
            self.constraint.pending[i] = (log_w, checks)
            tokens.append(token)
        batch = len(state.active)
        return Verdict(torch.zeros(batch, dtype=torch.long), torch.tensor(tokens, device=state.lm.device),
                       ["target"] * batch)


def _bound_check(constraint, b: int) -> Callable[[int], bool]:
    return lambda token: constraint.check(b, token)
