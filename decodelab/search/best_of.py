"""Best-of-n as a row policy: n sampled rows per prompt, the most likely one returned.

OpenAI's `best_of` (completions API): generate n completions and return the one with the highest
log-probability per token under the model. Each row samples independently from its own stream
(row i of a prompt draws stream (seed, i)); the choice uses the mean raw log-probability of the
row's tokens, so it favours fluent completions and is *not* a sample from the model's law.
"""

from __future__ import annotations

from typing import Any

import torch

from ..decoding.protocols import Proposal, Verdict
from ..decoding.records import GenerationOutput


class BestOf:
    """Row policy of best-of-n (see the module docstring).

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> out = dl.generate(lm, "hello", best_of=3, temperature=1.0, seed=0, max_new_tokens=4)
        >>> len(out.results["best_of"]["candidates"])
        3
    """

    streams = False

    def __init__(self, n: int):
        self.rows_per_prompt = n
        self.logprob: dict[int, float] = {}

    def before_emit(self, state: Any, logits: torch.Tensor, proposal: Proposal, verdict: Verdict) -> None:
        logprobs = logits[:, 0].float().log_softmax(-1)
        chosen = logprobs.gather(-1, verdict.next_tokens.to(logprobs.device)[:, None]).squeeze(-1).tolist()
        for b, i in enumerate(state.active):
            self.logprob[i] = self.logprob.get(i, 0.0) + chosen[b]
        return None

    def outputs(self, state: Any, rows: list[GenerationOutput]) -> list[GenerationOutput]:
        outputs = []
        for group in range(max(state.groups) + 1):
            members = [i for i, g in enumerate(state.groups) if g == group]
            means = [self.logprob.get(i, 0.0) / max(1, len(rows[i].token_ids)) for i in members]
            best = members[max(range(len(members)), key=lambda j: means[j])]
            out = rows[best]
            out.results["best_of"] = {"mean_logprob": max(means), "candidates": [
                {"text": rows[i].text, "token_ids": rows[i].token_ids, "mean_logprob": m}
                for i, m in zip(members, means)]}
            outputs.append(out)
        return outputs
