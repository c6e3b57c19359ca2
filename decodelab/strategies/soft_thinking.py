"""Soft Thinking (Zhang, He, Yan, Shen, Zhao, Wang, Shen & Wang 2025, "Soft Thinking: Unlocking the
Reasoning Potential of LLMs in Continuous Concept Space").

During a reasoning phase the model reads *concept tokens* instead of sampled ones: the next input
is the probability-weighted mixture of the embeddings of the `top_k` most likely tokens (their
probabilities renormalised), so the reasoning carries the whole distribution forward. The
phase ends at the paper's Cold Stop — the entropy of the concept stays below `cold_entropy` for
`cold_steps` steps in a row — or after `max_thinking_tokens`, or when the concept's top token
starts `think_end`; then `think_end` is written and the answer is decoded as usual.

The text shows each concept's top token (what the concept is "about"); the records hold the
model's log-probabilities as for any step. Rows of a batch think and stop independently. The
mixture goes in through a hook on the input embeddings installed right before each forward (see
`common.MixedInputs`); at the very last token of a request (no room left to propose) the concept's
top token is read instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..decoding.method import BuildContext, Method, Parts, register
from ..decoding.protocols import Proposal, Verdict
from ..sampling.options import option
from ..sampling.processors import entropy
from .common import EmptyProposer, MixedInputs, choose, parts_of, shaped_logits, verdict
from .slot import ALONE


class SoftThinking(EmptyProposer):
    """Proposer and verifier of Soft Thinking (see the module docstring).

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> out = dl.generate(lm, "hello", strategy="soft-thinking", max_new_tokens=6)
        >>> "thinking_tokens" in out.results["soft-thinking"]
        True
    """

    def __init__(self, top_k: int, cold_entropy: float, cold_steps: int, max_thinking: int, end_ids: list[int]):
        self.k = top_k
        self.cold_entropy = cold_entropy
        self.cold_steps = cold_steps
        self.max_thinking = max_thinking
        self.end_ids = end_ids
        self.mixed = MixedInputs()
        self.cold: dict[int, int] = {}
        self.ending: dict[int, list[int]] = {}
        self.thought: dict[int, int] = {}  # row -> its thinking tokens, once thinking ended
        self.how: dict[int, str] = {}

    def before_forward(self, state: Any) -> None:
        self.mixed.install(state)

    def verify(self, state: Any, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        self.mixed.remove()
        scores = shaped_logits(state, target_logits[:, 0])
        tokens = choose(state, scores)
        probs = scores.softmax(-1)  # the sampler's bias, penalties and temperature shape the concepts
        top_p, top_ids = probs.topk(min(self.k, probs.shape[-1]), dim=-1)
        weights = top_p / top_p.sum(-1, keepdim=True)
        concept_entropy = entropy(weights.clamp_min(1e-30).log()).squeeze(-1)
        for b, i in enumerate(state.active):
            if self.ending.get(i):  # writing think_end
                tokens[b] = self.ending[i].pop(0)
                continue
            if i in self.thought:  # answering: ordinary decoding
                continue
            self.cold[i] = self.cold.get(i, 0) + 1 if float(concept_entropy[b]) < self.cold_entropy else 0
            done = len(state.rows[i].output_ids)
            stop = ("cold stop" if self.cold[i] >= self.cold_steps else "max thinking tokens"
                    if done >= self.max_thinking else "end marker" if int(top_ids[b, 0]) == self.end_ids[0]
                    else None)
            if stop is not None:
                self.how[i], self.thought[i] = stop, done
                self.ending[i] = list(self.end_ids)
                tokens[b] = self.ending[i].pop(0)
                continue
            tokens[b] = top_ids[b, 0]
            self.mixed.set(state.lm, i, top_ids[b], weights[b])
        return verdict(tokens)

    def results(self, state: Any, row: int, out: Any) -> None:
        out.results["soft-thinking"] = {"thinking_tokens": self.thought.get(row), "stopped_by": self.how.get(row)}


@dataclass
class SoftThinkingOptions:
    top_k: int = option(8, "tokens mixed into each concept token (1: greedy thinking)", ge=1, le=256)
    cold_entropy: float = option(0.1, "Cold Stop: concept entropy (nats) counted as confident", ge=0, le=20)
    cold_steps: int = option(64, "Cold Stop: confident steps in a row that end the thinking", ge=1, le=32768)
    max_thinking_tokens: int = option(256, "thinking tokens at most", ge=0, le=32768)
    think_end: str = option("</think>", "text written when thinking ends (then the answer follows)", max_length=256)


def _build(ctx: BuildContext, o: SoftThinkingOptions) -> Parts:
    from ..errors import InvalidOption

    end_ids = ctx.lm.tokenizer.encode(o.think_end, add_special_tokens=False)
    if not end_ids:
        raise InvalidOption("soft-thinking: think_end must encode to at least one token", param="think_end")
    return parts_of(SoftThinking(o.top_k, o.cold_entropy, o.cold_steps, o.max_thinking_tokens, end_ids))


register(Method("soft-thinking", "strategy", "Soft Thinking: concept tokens (embedding mixtures) while reasoning",
                "Zhang et al. 2025, Soft Thinking: Unlocking the Reasoning Potential of LLMs in Continuous Concept "
                "Space", SoftThinkingOptions, _build, ALONE, aliases=("soft",),
                example={"top_k": 4, "max_thinking_tokens": 3}))
