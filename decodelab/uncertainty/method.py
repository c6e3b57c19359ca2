"""The `scores` option: token-level uncertainty columns on the records of any generation.

`dl.generate(lm, prompt, scores=["entropy", "margin"])` (CLI `--scores entropy,margin`, server
field `"scores": ["entropy", "margin"]`) adds one `record.extra` column per named score (see
`token_scores`), computed by an observer from the raw target distribution each token was chosen
from, and `out.results["scores"]` with the sequence perplexity and mean entropy. It only observes,
so it combines with every other method and changes no token.

Example:
    >>> import decodelab as dl
    >>> lm = dl.load("tiny-random", vocab_size=32)
    >>> out = dl.generate(lm, "ab", max_new_tokens=3, temperature=0, scores="entropy,margin")
    >>> sorted(out.records[0].extra)
    ['entropy', 'margin']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..decoding.method import BuildContext, Capabilities, Method, Parts, Slot, register, register_slot
from ..errors import InvalidOption
from ..sampling.options import option
from .token_scores import TOKEN_SCORES, mean, perplexity, score_columns

MAX_SCORES = 16


def parse_score_names(value: Any) -> tuple[str, ...]:
    """Score names from "a,b", ["a", "b"] or ("a",); InvalidOption names the known ones."""
    if isinstance(value, str):
        names = [n.strip() for n in value.split(",") if n.strip()]
    elif isinstance(value, (list, tuple)) and all(isinstance(n, str) for n in value):
        names = [n.strip() for n in value]
    else:
        raise InvalidOption(f"scores must be score names (text or a list of text), got {value!r}", param="scores")
    if not names or len(names) > MAX_SCORES:
        raise InvalidOption(f"scores takes 1 to {MAX_SCORES} names", param="scores")
    unknown = [n for n in names if n not in TOKEN_SCORES]
    if unknown:
        raise InvalidOption(f"unknown score {unknown[0]!r}; known: {', '.join(TOKEN_SCORES)}", param="scores")
    return tuple(dict.fromkeys(names))


@dataclass
class ScoresOptions:
    scores: str | list[str] | None = option(
        None, f"token uncertainty columns for the records: {', '.join(TOKEN_SCORES)} (comma-separated or a list)")

    def __post_init__(self) -> None:
        if self.scores is not None:
            self.scores = parse_score_names(self.scores)


class ScoreObserver:
    """Adds the named score columns to each record (see `decodelab.decoding.protocols.Observer`)."""

    name = "scores"

    def __init__(self, names: tuple[str, ...]):
        self.names = names

    def columns(self, state: Any, b: int, logprobs: torch.Tensor, token: int, source: str) -> dict[str, float]:
        values = score_columns(self.names, logprobs[None], torch.tensor([token]))
        return {name: column[0] for name, column in values.items()}


def _summary(state: Any, row: int, out: Any) -> None:
    logprobs = [r.logprob for r in out.records]
    if not logprobs:
        return
    out.results["scores"] = {"perplexity": perplexity(logprobs), "mean_entropy": mean([r.entropy for r in out.records])}


def _build(ctx: BuildContext, o: ScoresOptions) -> Parts:
    return Parts(observers=[ScoreObserver(o.scores)], results=_summary)


register_slot(Slot("scores", "token-level uncertainty scores as record columns", flat=True,
                   requires="scores=NAMES"))
register(Method("scores", "scores", "token uncertainty columns (logprob, entropy, max_prob, margin) on the records",
                "Fadeeva et al. 2023, LM-Polygraph: Uncertainty Estimation for Language Models (the baselines)",
                ScoresOptions, _build, Capabilities(lossless=True, composes_with=frozenset({"*"})),
                selects=lambda v: bool(v.get("scores")), example={"scores": "entropy,margin"}))

__all__ = ["ScoresOptions", "ScoreObserver", "parse_score_names"]
