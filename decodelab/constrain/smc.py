"""Sequential Monte Carlo over AWRS: samples that approach the *global* constrained law.

Lipkin, Loula, Vieira, Cotterell, Mansinghka, O'Donnell, et al., 2025, "Fast Controlled
Generation from Language Models with Adaptive Weighted Rejection Sampling" (COLM 2025), with
the SMC scheme of Loula et al., 2025, "Syntactic and Semantic Control of Large Language Models
via Sequential Monte Carlo" (ICLR 2025).

Locally masked decoding samples p(x_t | x_<t, allowed) token by token, which over-weights
prefixes that the constraint later forces into unlikely continuations: it does not sample
p(x | x in L). SMC keeps N particles: N rows of the generation loop per prompt, run by the loop like any
other rows (batches, stop strings, records), with `SMCPolicy` as their row policy. Each step,
every live particle draws its next token by AWRS (the verifier) and multiplies its weight by the
AWRS weight (an unbiased estimate of the local normaliser Z_t). Before each step, when the
effective sample size (sum w)^2 / sum w^2 of a prompt's *live* particles falls below
`ess_threshold` x their number, the live particles are resampled multinomially (KV-cache rows
duplicated by the loop's `reorder_rows`) and their weights set to their mean. Finished particles
keep their weights: resampling any subset with its total weight conserved keeps the weighted
measure unbiased. A particle ends at EOS (allowed only when the text is complete) or when the
grammar cannot be extended; particles that end incomplete (max_new_tokens, a stop string before
the text is complete) get weight 0.

Exact: the unnormalised weighted particle measure is unbiased for p(x)1[x in L], so
exp(log_marginal_likelihood) (mean final weight) is an unbiased estimate of p(L) under the
model (the probability that the model's text is in the language), and the weighted particle
law converges to p(x | x in L) as N grows (consistency; tested by enumeration). One returned
sample is a draw from the final weighted particles: exact only as N -> infinity.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..decoding.records import GenerationOutput
from .mask import GrammarConstraint


def log_mean_exp(x: torch.Tensor) -> float:
    if not bool(torch.isfinite(x).any()):
        return float("-inf")
    return float(torch.logsumexp(x, 0) - math.log(x.numel()))


def effective_sample_size(log_w: torch.Tensor) -> float:
    """(sum w)^2 / sum w^2 of log weights (0 when every weight is 0)."""
    if not bool(torch.isfinite(log_w).any()):
        return 0.0
    return float(torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)))


class SMCPolicy:
    """The row policy of SMC: `particles` rows per prompt, resampled on low ESS, one output per
    prompt drawn by final weight (with every particle and log Z in `out.results["smc"]`).

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=16)
        >>> out = dl.generate(lm, [1, 4], regex="(ea|to)", particles=8, temperature=1.0, seed=0, max_new_tokens=4)
        >>> len(out.results["smc"]["particles"])
        8
    """

    streams = False

    def __init__(self, constraint: GrammarConstraint, *, particles: int, ess_threshold: float):
        self.constraint = constraint
        self.rows_per_prompt = particles
        self.ess_threshold = ess_threshold
        self.resamples: dict[int, int] = {}

    def before_step(self, state: Any) -> list[int] | None:
        parents = list(range(len(state.active)))
        weights = self.constraint.log_weight
        for group in sorted({state.groups[i] for i in state.active}):
            live = [b for b, i in enumerate(state.active) if state.groups[i] == group]
            log_w = torch.tensor([weights.get(state.active[b], 0.0) for b in live], dtype=torch.float64)
            if not bool(torch.isfinite(log_w).any()) or effective_sample_size(log_w) >= self.ess_threshold * len(live):
                continue
            first = state.groups.index(group)
            index = torch.multinomial(torch.softmax(log_w, 0), len(live), replacement=True,
                                      generator=state.generators[first]).tolist()
            mean = log_mean_exp(log_w)
            for j, b in enumerate(live):
                parents[b] = live[index[j]]
                weights[state.active[b]] = mean  # every copy carries the mean weight
            self.resamples[group] = self.resamples.get(group, 0) + 1
        return parents

    def outputs(self, state: Any, rows: list[GenerationOutput]) -> list[GenerationOutput]:
        outputs = []
        for group in range(max(state.groups) + 1):
            members = [i for i, g in enumerate(state.groups) if g == group]
            complete = [bool(rows[i].constraint_satisfied) and rows[i].finish_reason == "stop" for i in members]
            log_w = torch.tensor([rows[i].log_weight if ok else float("-inf") for i, ok in zip(members, complete)],
                                 dtype=torch.float64)
            if bool(torch.isfinite(log_w).any()):
                chosen = members[int(torch.multinomial(torch.softmax(log_w, 0), 1,
                                                       generator=state.generators[members[0]]))]
            else:
                # nothing complete: report the longest particle, marked as a failure
                chosen = max(members, key=lambda i: len(rows[i].token_ids))
            out = rows[chosen]
            if not bool(torch.isfinite(log_w).any()):
                out.finish_reason = "constraint" if all(rows[i].finish_reason == "constraint" for i in members) \
                    else "length"
                out.constraint_satisfied = False
            particles = [{"text": rows[i].text, "token_ids": rows[i].token_ids, "log_weight": float(w),
                          "complete": ok} for i, w, ok in zip(members, log_w.tolist(), complete)]
            out.log_weight = float(log_w[members.index(chosen)])
            out.log_marginal_likelihood = log_mean_exp(log_w)
            out.particles = particles
            out.stats.resamples = self.resamples.get(group, 0)
            out.stats.target_forwards = max(rows[i].stats.target_forwards for i in members)
            out.results["smc"] = {"log_marginal_likelihood": out.log_marginal_likelihood, "particles": particles,
                                  "resamples": out.stats.resamples}
            outputs.append(out)
        return outputs
