"""Sequential Monte Carlo over AWRS: samples that approach the *global* constrained law.

Lipkin, Loula, Vieira, Cotterell, Mansinghka, O'Donnell, et al., 2025, "Fast Controlled
Generation from Language Models with Adaptive Weighted Rejection Sampling" (COLM 2025), with
the SMC scheme of Loula et al., 2025, "Syntactic and Semantic Control of Large Language Models
via Sequential Monte Carlo" (ICLR 2025).

Locally masked decoding samples p(x_t | x_<t, allowed) token by token, which over-weights
prefixes that the constraint later forces into unlikely continuations: it does not sample
p(x | x in L). SMC keeps N particles (rows of one batch). Each step, every live particle draws
its next token by AWRS and multiplies its weight by the AWRS weight (an unbiased estimate of
the local normaliser Z_t). When the effective sample size (sum w)^2 / sum w^2 falls below
`ess_threshold * N`, particles are resampled multinomially (KV-cache rows duplicated with
`Sequence.select_rows`) and all weights set to their mean. A particle ends at EOS (allowed
only when the text is complete) or when the grammar cannot be extended; particles still
incomplete at max_new_tokens get weight 0.

Exact: the unnormalised weighted particle measure is unbiased for p(x)1[x in L], so
exp(log_marginal_likelihood) (mean final weight) is an unbiased estimate of p(L) under the
model (the probability that the model's text is in the language), and the weighted particle
law converges to p(x | x in L) as N grows (consistency; tested by enumeration). One returned
sample is a draw from the final weighted particles: exact only as N -> infinity.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..decoding.records import GenerationOutput, GenerationStats, TokenRecord
from ..engine.sequence import Sequence
from ..models.lm import LM
from ..sampling.config import SamplingConfig, process_logits
from ..sampling.processors import TokenHistory, entropy
from .awrs import awrs_sample
from .grammar import Grammar
from .mask import token_allowed


@dataclass
class Particle:
    """One SMC particle: its tokens, log weight and state at the end of the run."""

    token_ids: list[int] = field(default_factory=list)
    log_weight: float = 0.0
    complete: bool = False
    dead: bool = False
    records: list[TokenRecord] = field(default_factory=list)

    def copy(self) -> Particle:
        return Particle(list(self.token_ids), self.log_weight, self.complete, self.dead, list(self.records))


@dataclass
class SMCResult:
    """All particles, the log marginal-likelihood estimate, and run counters."""

    particles: list[Particle]
    log_marginal_likelihood: float
    resamples: int
    checks: int
    steps: int
    forwards: int
    prefill_time: float
    wall_time: float
    constraint_time: float


def log_mean_exp(x: torch.Tensor) -> float:
    if not bool(torch.isfinite(x).any()):
        return float("-inf")
    return float(torch.logsumexp(x, 0) - math.log(x.numel()))


def effective_sample_size(log_w: torch.Tensor) -> float:
    """(sum w)^2 / sum w^2 of log weights (0 when every weight is 0)."""
    if not bool(torch.isfinite(log_w).any()):
        return 0.0
    return float(torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)))


def run_smc(lm: LM, prompt_ids: list[int], grammar: Grammar, *, particles: int, max_new_tokens: int,
            config: SamplingConfig, generator: torch.Generator | None = None, ess_threshold: float = 0.5,
            records: bool = True) -> SMCResult:
    """SMC with `particles` AWRS particles continuing `prompt_ids` under `grammar`.

    Example:
        >>> import decodelab as dl
        >>> from decodelab.constrain import compile_grammar
        >>> lm = dl.load("tiny-random", vocab_size=16)
        >>> r = run_smc(lm, [1, 4], compile_grammar(lm, regex="(ea|to)"), particles=8, max_new_tokens=4,
        ...             config=dl.SamplingConfig(temperature=1.0))
        >>> all(p.complete for p in r.particles if p.log_weight > float("-inf"))
        True
    """
    start = time.perf_counter()
    n = particles
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.seed() % 2**62))
    eos = set(lm.eos_token_ids)
    pad = lm.pad_token_id
    processors = config.processors()
    needs_history = any(p.needs_history for p in processors)
    seq = Sequence(lm, [prompt_ids])
    logits = seq.prefill()
    prefill_time = time.perf_counter() - start
    seq.select_rows([0] * n)
    logits = logits.expand(n, -1)
    matchers = [grammar.matcher() for _ in range(n)]
    parts = [Particle() for _ in range(n)]
    log_w = torch.zeros(n, dtype=torch.float64)
    checks = resamples = steps = 0
    forwards = 1
    constraint_time = 0.0
    for _ in range(max_new_tokens):
        live = [i for i in range(n) if not (parts[i].complete or parts[i].dead)]
        if not live:
            break
        steps += 1
        history = None
        if needs_history:
            history = TokenHistory.from_ids([prompt_ids] * len(live), [parts[i].token_ids for i in live],
                                            lm.vocab_size, lm.device)
        rows = logits[live].float()
        logprobs = process_logits(rows, config, history, processors).log_softmax(-1)
        raw = rows.log_softmax(-1) if records else None
        u = torch.rand(len(live), 2, lm.vocab_size, dtype=torch.float64, generator=generator)
        gumbels = -torch.log(-torch.log(u.clamp_min(1e-300)))
        t0 = time.perf_counter()
        for j, i in enumerate(live):
            m = matchers[i]
            draw = awrs_sample(logprobs[j], lambda t, m=m: token_allowed(m, grammar, t), gumbels=gumbels[j])
            checks += draw.checks
            part = parts[i]
            if draw.token is None:
                part.dead = True
                log_w[i] = float("-inf")
                continue
            token = draw.token
            log_w[i] += draw.log_weight
            part.token_ids.append(token)
            if raw is not None:
                part.records.append(TokenRecord(token, lm.token_text(token), float(raw[j, token]),
                                                float(entropy(raw[j])), [], "target",
                                                {"log_weight": draw.log_weight, "constraint_checks": float(draw.checks)}))
            if token in eos:
                part.complete = True
            else:
                m.consume_token(token)
                part.complete = bool(m.is_stopped())
        constraint_time += time.perf_counter() - t0
        if effective_sample_size(log_w) < ess_threshold * n and bool(torch.isfinite(log_w).any()) \
                and not all(p.complete or p.dead for p in parts):
            probs = torch.softmax(log_w, 0)
            index = torch.multinomial(probs, n, replacement=True, generator=generator).tolist()
            mean = log_mean_exp(log_w)
            seen: set[int] = set()
            new_matchers, new_parts = [], []
            for r in index:
                new_matchers.append(matchers[r].deep_copy() if r in seen else matchers[r])
                new_parts.append(parts[r].copy())
                seen.add(r)
            matchers, parts = new_matchers, new_parts
            seq.select_rows(index)
            log_w = torch.full((n,), mean, dtype=torch.float64)
            resamples += 1
        if steps >= max_new_tokens or all(p.complete or p.dead for p in parts):
            break  # particles still running at the budget's end get weight 0 below
        feed = [[p.token_ids[-1] if not (p.complete or p.dead) and p.token_ids else pad] for p in parts]
        logits = seq.forward(torch.tensor(feed, device=lm.device))[:, -1]
        forwards += 1
    for i, p in enumerate(parts):
        if not p.complete:
            log_w[i] = float("-inf")
    for i, p in enumerate(parts):
        p.log_weight = float(log_w[i])
    return SMCResult(parts, log_mean_exp(log_w), resamples, checks, steps, forwards, prefill_time,
                     time.perf_counter() - start, constraint_time)


def smc_output(lm: LM, prompt_ids: list[int], result: SMCResult, generator: torch.Generator,
               ) -> GenerationOutput:
    """One `GenerationOutput`: a particle drawn by final weight, plus all particles and log Z."""
    log_w = torch.tensor([p.log_weight for p in result.particles], dtype=torch.float64)
    if bool(torch.isfinite(log_w).any()):
        chosen = int(torch.multinomial(torch.softmax(log_w, 0), 1, generator=generator))
        finish = "stop"
    else:
        # nothing complete: report the longest incomplete particle, marked as a failure
        chosen = max(range(len(result.particles)), key=lambda i: len(result.particles[i].token_ids))
        finish = "constraint" if all(p.dead for p in result.particles) else "length"
    best = result.particles[chosen]
    stats = GenerationStats(prompt_tokens=len(prompt_ids), new_tokens=len(best.token_ids),
                            target_forwards=result.forwards, verify_steps=result.steps,
                            wall_time=result.wall_time, prefill_time=result.prefill_time,
                            constraint_checks=result.checks, constraint_time=result.constraint_time,
                            resamples=result.resamples)
    ids = [t for t in best.token_ids if t not in lm.eos_token_ids]
    particles: list[dict[str, Any]] = [
        {"text": lm.decode([t for t in p.token_ids if t not in lm.eos_token_ids]), "token_ids": p.token_ids,
         "log_weight": p.log_weight, "complete": p.complete}
        for p in result.particles]
    return GenerationOutput(text=lm.decode(ids), token_ids=best.token_ids, records=best.records, stats=stats,
                            finish_reason=finish, prompt_token_ids=list(prompt_ids),
                            log_weight=best.log_weight, log_marginal_likelihood=result.log_marginal_likelihood,
                            particles=particles, constraint_satisfied=best.complete)
