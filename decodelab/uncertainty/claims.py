"""Claim-conditioned probability (CCP): token uncertainty that only counts alternatives that change
the meaning.

Fadeeva, Rubashevskii, Shelmanov, Petrakov, Li, Mubarak, Tsymbalov, Kuzmin, Panchenko, Baldwin,
Nakov & Panov (2024), "Fact-Checking the Output of Large Language Models via Token-Level
Uncertainty Quantification". For each token x_j of a claim, take the model's top-K alternatives
x_j^k at that position (the generated token among them) and ask a judge whether the claim prefix
ending in x_j^k entails the one ending in x_j, contradicts it, or neither:

    CCP_word(x_j) = sum_{k: entail} p(x_j^k) / sum_{k: entail or contradict} p(x_j^k)

and a claim's CCP is the product over its tokens; 1 - CCP is its uncertainty. When every
alternative means something else, CCP_word is the token's probability (normalised over the K
alternatives; exactly p(x_j) when K is the whole vocabulary); when all agree, it is 1.

Claims here are the sentences of the output (split after ".", "!", "?" or a newline); the paper
extracts claims with an LLM. The judge is any callable `judge(original, alternatives) -> labels`
("entail", "contradict", "neutral"); `decodelab.uncertainty.embedder.EmbeddingJudge` is the
packaged one (see docs/benchmarks.md for how it was chosen).

Example:
    >>> import decodelab as dl
    >>> lm = dl.load("tiny-random", vocab_size=16)
    >>> agree = lambda original, alternatives: ["entail"] * len(alternatives)
    >>> r = ccp(lm, [1, 5, 6], [7, 8], judge=agree, alternatives=4)
    >>> r.claims[0]["ccp"]
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import InvalidOption
from ..models.lm import LM, Prompt
from .score import completion_logprobs, encode_completion

Judge = Callable[[str, list[str]], list[str]]
LABELS = ("entail", "contradict", "neutral")
MAX_ALTERNATIVES = 100
CLAIM_ENDS = (".", "!", "?", "\n")


@dataclass
class ClaimScores:
    """Per token `ccp` (CCP_word) and per claim (sentence) `ccp` with its token span."""

    token_ids: list[int]
    tokens: list[dict[str, Any]] = field(default_factory=list)  # position, token_id, text, ccp
    claims: list[dict[str, Any]] = field(default_factory=list)  # text, start, end, ccp

    def as_dict(self) -> dict[str, Any]:
        return {"token_ids": self.token_ids, "tokens": self.tokens, "claims": self.claims}


def split_claims(pieces: list[str]) -> list[tuple[int, int]]:
    """[start, end) token spans of the sentences of a text given as token pieces."""
    spans, start = [], 0
    for j, piece in enumerate(pieces):
        if piece.strip() and piece.rstrip()[-1:] in CLAIM_ENDS or "\n" in piece:
            spans.append((start, j + 1))
            start = j + 1
    if start < len(pieces):
        spans.append((start, len(pieces)))
    return [(a, b) for a, b in spans if any(p.strip() for p in pieces[a:b])]


def ccp_word(probs: list[float], labels: list[str]) -> float:
    """sum of entailing alternatives' probability over entailing + contradicting ones (1 when the
    judge finds every alternative neutral: no evidence of a change of meaning)."""
    entail = sum(p for p, label in zip(probs, labels) if label == "entail")
    decided = entail + sum(p for p, label in zip(probs, labels) if label == "contradict")
    return entail / decided if decided > 0 else 1.0


def ccp(lm: LM, prompt: Prompt, output: str | list[int], *, judge: Judge, alternatives: int = 10,
        chat: bool | None = None) -> ClaimScores:
    """CCP of every token and every sentence-claim of `output` after `prompt` (teacher-forced)."""
    if not callable(judge):
        raise InvalidOption("judge must be a callable judge(original, alternatives) -> labels")
    if isinstance(alternatives, bool) or not isinstance(alternatives, int) or not 1 <= alternatives <= MAX_ALTERNATIVES:
        raise InvalidOption(f"alternatives must be an integer in [1, {MAX_ALTERNATIVES}]")
    prompt_ids = lm.encode(prompt, chat=chat)
    ids = encode_completion(lm, output)
    logprobs = completion_logprobs(lm, [prompt_ids], [ids])[0]
    k = min(alternatives, logprobs.shape[-1])
    top_lp, top_ids = torch.topk(logprobs, k, -1)
    pieces = [lm.token_text(t) for t in ids]
    result = ClaimScores(ids)
    word: list[float] = []
    for start, end in split_claims(pieces):
        for j in range(start, end):
            candidates = top_ids[j].tolist()
            probs = top_lp[j].exp().tolist()
            if ids[j] not in candidates:  # the generated token is always among the alternatives
                candidates[-1], probs[-1] = ids[j], float(logprobs[j, ids[j]].exp())
            prefix = lm.decode(ids[start:j])
            original = prefix + lm.decode([ids[j]])
            labels = list(judge(original, [prefix + lm.decode([c]) for c in candidates]))
            if len(labels) != len(candidates) or any(label not in LABELS for label in labels):
                raise InvalidOption(f"the judge must return one of {', '.join(LABELS)} per alternative")
            # the generated token trivially entails itself
            labels[candidates.index(ids[j])] = "entail"
            word.append(ccp_word(probs, labels))
            result.tokens.append({"position": j, "token_id": ids[j], "text": pieces[j], "ccp": word[-1]})
        value = math.prod(t["ccp"] for t in result.tokens[-(end - start):])
        result.claims.append({"text": lm.decode(ids[start:end]), "start": start, "end": end, "ccp": value})
    return result


__all__ = ["ccp", "ccp_word", "split_claims", "ClaimScores", "Judge", "LABELS"]
