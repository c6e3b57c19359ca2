"""SAR, "Shifting Attention to Relevance": weight each token's uncertainty by how much of the
answer's meaning it carries, and each sample's probability by how many other samples agree.

Duan, Cheng, Wang, Zavalny, Wang, Xu, Kailkhura & Xu (2024), "Shifting Attention to Relevance:
Towards the Predictive Uncertainty Quantification of Free-Form Large Language Models" (ACL 2024).

- Token relevance R(t) = 1 - sim(answer, answer without token t); TokenSAR = sum_t -log p(t) R(t) /
  sum_t R(t) (the length-normalised negative log-likelihood when every token is equally relevant).
- Sentence-level SAR over K samples s_i with probabilities p_i:
  SentSAR(s_i) = -log(p_i + sum_{j != i} sim(s_i, s_j) p_j / temperature); the score is the mean over
  the samples. SAR combines both: p_i = exp(-TokenSAR(s_i)).

`similarity(text, others) -> list[float]` is any meaning similarity in [0, 1]; the packaged one
is `Embedder().similarity` (the paper uses a cross-encoder).

Example:
    >>> import decodelab as dl
    >>> lm = dl.load("tiny-random", vocab_size=16)
    >>> flat = lambda text, others: [0.5] * len(others)      # every token equally relevant
    >>> r = token_sar(lm, [1, 5], [6, 7], similarity=flat)
    >>> round(r.value, 6) == round(-sum(r.logprobs) / 2, 6)
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InvalidOption
from ..models.lm import LM, Prompt
from .score import score

Similarity = Callable[[str, list[str]], list[float]]


@dataclass
class TokenSAR:
    value: float  # relevance-weighted negative log-likelihood
    relevance: list[float]
    logprobs: list[float]
    text: str


@dataclass
class SAR:
    value: float  # mean SentSAR over the samples (higher: more uncertain)
    per_sample: list[float]
    token_sar: list[TokenSAR]


def token_sar(lm: LM, prompt: Prompt, output: str | list[int], *, similarity: Similarity,
              chat: bool | None = None) -> TokenSAR:
    """TokenSAR of one answer (teacher-forced log-probabilities, relevance by `similarity`)."""
    return _token_sar(lm, score(lm, prompt, output, scores="logprob", chat=chat), similarity)


def token_sars(lm: LM, prompt: Prompt, outputs: list[str | list[int]], *, similarity: Similarity,
               chat: bool | None = None) -> list[TokenSAR]:
    """TokenSAR of several answers to one prompt (one padded forward for all)."""
    scored = score(lm, [prompt] * len(outputs), list(outputs), scores="logprob", chat=chat)
    return [_token_sar(lm, s, similarity) for s in scored]


def _token_sar(lm: LM, s, similarity: Similarity) -> TokenSAR:
    ids = s.token_ids
    text = lm.decode(ids)
    removed = [lm.decode(ids[:t] + ids[t + 1:]) for t in range(len(ids))]
    sims = list(similarity(text, removed))
    if len(sims) != len(ids):
        raise InvalidOption("similarity must return one value per other text")
    relevance = [min(1.0, max(0.0, 1.0 - x)) for x in sims]
    logprobs = s.column("logprob")
    total = sum(relevance)
    weights = [r / total for r in relevance] if total > 0 else [1 / len(ids)] * len(ids)
    return TokenSAR(-sum(w * lp for w, lp in zip(weights, logprobs)), relevance, logprobs, text)


def sentence_sar(probabilities: list[float], similarities: list[list[float]], temperature: float) -> list[float]:
    """SentSAR of each sample from sample probabilities and pairwise similarities.

    Similarities are relevance weights in [0, 1] (the paper's cross-encoder scores): an embedder's
    cosine below 0 counts as 0, so the sum inside the log stays a non-negative mass; a sample whose
    mass underflows to 0 gets +inf (the most uncertain)."""
    k = len(probabilities)
    out = []
    for i in range(k):
        mass = probabilities[i] + sum(min(1.0, max(0.0, similarities[i][j])) * probabilities[j]
                                      for j in range(k) if j != i) / temperature
        out.append(-math.log(mass) if mass > 0 else math.inf)
    return out


def sar(lm: LM, prompt: Prompt, samples: list[str | list[int]], *, similarity: Similarity,
        temperature: float = 0.001, chat: bool | None = None) -> SAR:
    """SAR over sampled answers to one prompt (give at least two samples)."""
    if not isinstance(samples, (list, tuple)) or len(samples) < 2:
        raise InvalidOption("SAR needs a list of at least two sampled answers")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature <= 1e6:
        raise InvalidOption("temperature must be a number in (0, 1e6]")
    tokens = token_sars(lm, prompt, list(samples), similarity=similarity, chat=chat)
    probabilities = [math.exp(-t.value) for t in tokens]
    texts = [t.text for t in tokens]
    sims = [[1.0 if i == j else 0.0 for j in range(len(texts))] for i in range(len(texts))]
    for i in range(len(texts)):
        others = [j for j in range(len(texts)) if j != i]
        for j, value in zip(others, similarity(texts[i], [texts[j] for j in others])):
            sims[i][j] = value
    per_sample = sentence_sar(probabilities, sims, temperature)
    return SAR(sum(per_sample) / len(per_sample), per_sample, tokens)


__all__ = ["token_sar", "token_sars", "sentence_sar", "sar", "TokenSAR", "SAR", "Similarity"]
