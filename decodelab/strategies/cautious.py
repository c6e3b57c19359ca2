"""Cautious Next Token Prediction (Wang, Li, Zhang, Ji & Xie 2025, "Cautious Next Token
Prediction", Findings of ACL).

Ordinary sampling, except where the model is unsure: when the entropy of the next-token
distribution exceeds `entropy_threshold`, `trials` continuations are sampled from that step on,
each until its first punctuation mark (or `max_trial_tokens`), and the trial with the lowest
perplexity under the model is kept whole. The trials of every unsure row of the batch run in one
forward per step on a fork of the KV cache. The kept trial's tokens after the first are proposed
to the loop as drafts at the next step and accepted as they are, so the loop's own forward puts
them in the cache (and scores the step after them).

Trials draw from each row's own random stream with the sampler's temperature and truncation
(penalties apply to the first token only). With a threshold no step exceeds, this is plain
sampling, token for token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..decoding.method import BuildContext, Capabilities, Method, Parts, register
from ..decoding.protocols import Proposal, Verdict
from ..sampling.config import sample_from_probs
from ..sampling.options import option
from ..sampling.processors import TokenHistory, entropy
from .common import parts_of
from .lookahead import fork, punctuation_tokens, rollout


class CautiousDecoding:
    """Proposer (the rest of a kept trial) and verifier (trials at unsure steps) of CNTP.

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> out = dl.generate(lm, "hello", strategy="cautious", temperature=1, seed=0, max_new_tokens=6)
    """

    def __init__(self, entropy_threshold: float, trials: int, max_trial_tokens: int):
        self.threshold = entropy_threshold
        self.trials = trials
        self.max_len = max_trial_tokens
        self.plan: dict[int, list[int]] = {}  # row -> tokens of its kept trial still to emit
        self.log: dict[int, list[dict[str, Any]]] = {}

    # ------------------------------------------------------------------ proposer
    def start(self, state: Any) -> None:
        pass

    def propose(self, state: Any, budget: list[int]) -> Proposal:
        plans = []
        for b, i in enumerate(state.active):
            plan = self.plan.pop(i, [])
            plans.append(plan[: budget[b]])
            if plan[budget[b]:]:  # cut by max_new_tokens: the verifier emits the next one
                self.plan[i] = plan[budget[b]:]
        width = max(len(p) for p in plans)
        tokens = torch.zeros(len(plans), width, dtype=torch.long)
        for b, p in enumerate(plans):
            tokens[b, : len(p)] = torch.tensor(p, dtype=torch.long)
        return Proposal(tokens, torch.tensor([len(p) for p in plans]))

    def accepted(self, state: Any, proposal: Proposal, verdict: Verdict) -> None:
        pass

    def select_rows(self, rows: list[int]) -> None:
        pass  # plans are kept by row index

    # ------------------------------------------------------------------ verifier
    def verify(self, state: Any, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        batch = target_logits.shape[0]
        accepted = proposal.lengths.to(target_logits.device)
        logits = target_logits[torch.arange(batch), accepted]  # after each row's (accepted) plan
        history = state.history(proposal.tokens) if proposal.width else state.history()
        if history is not None and proposal.width:
            index = torch.tensor([b * (proposal.width + 1) + int(accepted[b]) for b in range(batch)])
            history = TokenHistory(history.seen[index], history.output_counts[index])
        processed = state.process(logits, history)
        tokens = state.sample(processed)
        raw = logits.float().log_softmax(-1)
        unsure = (entropy(raw).squeeze(-1) > self.threshold).nonzero().flatten().tolist()
        ended = [b for b in range(batch) if accepted[b] and int(proposal.tokens[b, accepted[b] - 1]) in state.lm.eos_token_ids]
        planned = [b for b, i in enumerate(state.active) if self.plan.get(i)]
        if planned:
            tokens = tokens.clone()
            for b in planned:
                tokens[b] = self.plan[state.active[b]].pop(0)
        unsure = [b for b in unsure if b not in ended and b not in planned]  # no new trials inside a kept one
        if unsure and state.seq.room() > self.max_len + proposal.width:
            tokens = tokens.clone()
            self._trials(state, unsure, processed, raw, proposal, tokens)
        return Verdict(accepted.cpu(), tokens, ["target"] * batch)

    def _trials(self, state: Any, unsure: list[int], processed: torch.Tensor, raw: torch.Tensor,
                proposal: Proposal, tokens: torch.Tensor) -> None:
        n = self.trials
        rows = [b for b in unsure for _ in range(n)]
        generators = [state.generators[state.active[b]] for b in rows]
        uniforms = lambda: torch.stack([torch.rand((), dtype=torch.float64, generator=g) for g in generators])  # noqa: E731
        first = sample_from_probs(processed[rows].softmax(-1), uniforms())
        drop = (proposal.width - proposal.lengths).tolist() if proposal.width else None

        def pick(lp: torch.Tensor) -> torch.Tensor:
            shaped = lp
            for processor in state.processors:
                if not processor.needs_history:
                    shaped = processor(shaped, None)
            return sample_from_probs(shaped.softmax(-1), uniforms())

        paths, lps, kept = rollout(fork(state.seq, rows, drop), first, self.max_len - 1, pick,
                                   stop=punctuation_tokens(state.lm))
        first_lp = raw[rows].gather(-1, first[:, None])
        all_lp = torch.cat([first_lp, lps], 1)
        mask = torch.arange(all_lp.shape[1])[None] < kept[:, None]
        mean = (all_lp * mask).sum(1) / kept  # -log perplexity of each trial
        for u, b in enumerate(unsure):
            group = slice(u * n, (u + 1) * n)
            best = int(mean[group].argmax()) + u * n
            trial = paths[best, : int(kept[best])].tolist()
            tokens[b] = trial[0]
            i = state.active[b]
            self.plan[i] = trial[1:]
            self.log.setdefault(i, []).append({
                "position": len(state.rows[i].output_ids) + int(proposal.lengths[b]),
                "trials": [paths[t, : int(kept[t])].tolist() for t in range(group.start, group.stop)],
                "mean_logprob": mean[group].tolist(), "kept": best - u * n})

    def results(self, state: Any, row: int, out: Any) -> None:
        out.results["cautious"] = {"steps": self.log.get(row, [])}


@dataclass
class CautiousOptions:
    entropy_threshold: float = option(2.0, "sample trials where the entropy (nats) exceeds this", ge=0, le=20)
    trials: int = option(4, "continuations sampled at an unsure step", ge=1, le=32)
    max_trial_tokens: int = option(8, "tokens per trial at most (a trial ends at punctuation)", ge=1, le=64)


def _build(ctx: BuildContext, o: CautiousOptions) -> Parts:
    return parts_of(CautiousDecoding(o.entropy_threshold, o.trials, o.max_trial_tokens))


register(Method("cautious", "strategy", "Cautious Next Token Prediction: lowest-perplexity trial at unsure steps",
                "Wang et al. 2025, Cautious Next Token Prediction", CautiousOptions, _build,
                Capabilities(lossless=False, needs_sampling=True, composes_with=frozenset()),
                example={"entropy_threshold": 1.0, "trials": 2, "max_trial_tokens": 3}))
