"""Superposed decoding (Shen, Kusupati, Farhadi, et al. 2024, "Superposed Decoding: Multiple
Generations from a Single Autoregressive Inference Pass").

k drafts for the price of one: each step feeds one input, the superposition of the k drafts'
newest tokens' embeddings weighted by the drafts' probabilities, and the single next-token
distribution p it yields is shared by all drafts. Every draft is extended by the top-k tokens of
p; the k x k candidates are ranked by draft score + log((1 - ngram_weight) p(v) + ngram_weight
p_ngram(v | draft)), and the best k become the new drafts. The n-gram model is built from
decodelab's own packaged prompt suites (`decodelab/corpus`), see `ngram.py`.

The output is the best draft; `out.results["superposed"]["drafts"]` holds all k with their scores.
With k = 1 this is greedy decoding. Drafts that end (EOS) keep their score; the run ends when the
best draft has ended. Approximate by design: drafts share one superposed KV history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..decoding.method import BuildContext, Method, Parts, register
from ..decoding.protocols import Proposal, Verdict
from ..sampling.options import option
from .common import EmptyProposer, MixedInputs, parts_of, shaped_logits, verdict
from .ngram import NgramModel, corpus_ngrams
from .slot import ALONE


@dataclass
class Drafts:
    tokens: list[list[int]]
    scores: list[float]
    ended: list[bool]


class SuperposedDecoding(EmptyProposer):
    """Proposer, verifier and output policy of superposed decoding (see the module docstring).

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> out = dl.generate(lm, "hello", strategy="superposed", strategy_options={"k": 2}, max_new_tokens=4)
        >>> len(out.results["superposed"]["drafts"])
        2
    """

    rows_per_prompt = 1
    streams = False

    def __init__(self, k: int, ngram_weight: float, ngrams: NgramModel | None):
        self.k = k
        self.weight = ngram_weight
        self.ngrams = ngrams
        self.mixed = MixedInputs()
        self.drafts: dict[int, Drafts] = {}

    def before_forward(self, state: Any) -> None:
        self.mixed.install(state)

    def _rescore(self, context: list[int], p: torch.Tensor, ids: list[int]) -> list[float]:
        out = []
        for v, pv in zip(ids, p.tolist()):
            q = pv if self.ngrams is None or self.weight == 0 else (
                (1 - self.weight) * pv + self.weight * self.ngrams.prob(context, v))
            out.append(math.log(q) if q > 0 else float("-inf"))
        return out

    def verify(self, state: Any, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        self.mixed.remove()
        probs = shaped_logits(state, target_logits[:, 0]).softmax(-1)
        top_p, top_ids = probs.topk(min(self.k, probs.shape[-1]), dim=-1)
        eos = state.lm.eos_token_ids
        tokens = []
        for b, i in enumerate(state.active):
            ids, p = top_ids[b].tolist(), top_p[b]
            prompt = state.rows[i].prompt_ids
            old = self.drafts.get(i)
            if old is None:  # the first step: the k best tokens start the k drafts
                candidates = [([v], s, v in eos) for v, s in zip(ids, self._rescore(prompt, p, ids))]
            else:
                candidates = []
                for toks, score, ended in zip(old.tokens, old.scores, old.ended):
                    if ended:
                        candidates.append((toks, score, True))
                        continue
                    for v, s in zip(ids, self._rescore(prompt + toks, p, ids)):
                        candidates.append((toks + [v], score + s, v in eos))
            candidates.sort(key=lambda c: -c[1])
            kept = candidates[: self.k]
            drafts = Drafts([c[0] for c in kept], [c[1] for c in kept], [c[2] for c in kept])
            self.drafts[i] = drafts
            best = drafts.tokens[0]
            tokens.append(best[-1] if not drafts.ended[0] else next(iter(eos)))
            live = [j for j in range(len(kept)) if not drafts.ended[j]]
            if live:
                weights = torch.tensor([drafts.scores[j] for j in live]).softmax(-1)
                self.mixed.set(state.lm, i, torch.tensor([drafts.tokens[j][-1] for j in live]), weights)
        return verdict(torch.tensor(tokens, device=target_logits.device))

    def outputs(self, state: Any, rows: list[Any]) -> list[Any]:
        for i, out in enumerate(rows):
            drafts = self.drafts.get(i)
            if drafts is None:
                continue
            eos = state.lm.eos_token_ids
            listed = [{"token_ids": t, "text": state.lm.decode([x for x in t if x not in eos]), "score": s}
                      for t, s in zip(drafts.tokens, drafts.scores)]
            out.token_ids = listed[0]["token_ids"]
            out.text = listed[0]["text"]
            out.records = []  # the carrier row's records do not belong to any one draft
            out.results["superposed"] = {"drafts": listed}
        return rows


@dataclass
class SuperposedOptions:
    k: int = option(3, "drafts generated together (1: greedy)", ge=1, le=16)
    ngram_weight: float = option(0.1, "weight of the n-gram model (packaged prompt suites) in the rescoring",
                                 ge=0, le=1)
    ngram_order: int = option(3, "n of the n-gram model", ge=1, le=6)


def _build(ctx: BuildContext, o: SuperposedOptions) -> Parts:
    ngrams = corpus_ngrams(ctx.lm, o.ngram_order) if o.ngram_weight > 0 and o.k > 1 else None
    return parts_of(SuperposedDecoding(o.k, o.ngram_weight, ngrams))


register(Method("superposed", "strategy", "superposed decoding: k drafts from one forward per step",
                "Shen et al. 2024, Superposed Decoding: Multiple Generations from a Single Autoregressive "
                "Inference Pass", SuperposedOptions, _build, ALONE, example={"k": 2, "ngram_weight": 0.1}))
