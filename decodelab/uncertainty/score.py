"""`dl.score(lm, prompt, completion)`: token uncertainty of a given text, teacher-forced.

The prompt (encoded as for `dl.generate`, chat template included for chat models) and the
completion are forwarded together, once, and every completion token gets the columns that
`dl.generate(..., scores=[...])` puts on its records (the same functions, see `token_scores`).
A batch (lists of prompts and completions) is one padded forward.

Example:
    >>> import decodelab as dl
    >>> lm = dl.load("tiny-random", vocab_size=32)
    >>> s = dl.score(lm, "ab", "cd", chat=False)
    >>> [row["text"] for row in s.tokens], sorted(s.columns)
    (['c', 'd'], ['entropy', 'logprob', 'margin', 'max_prob'])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..decoding.generate import is_batch
from ..engine.full_forward import full_logits
from ..errors import InvalidOption, InvalidPrompt
from ..models.lm import LM, Prompt
from .method import parse_score_names
from .token_scores import TOKEN_SCORES, mean, perplexity, score_columns

Completion = str | list[int]


@dataclass
class ScoreResult:
    """Scores of one completion: `tokens` has one row per completion token (token_id, text and
    one column per score), plus the sequence perplexity and mean entropy."""

    prompt_token_ids: list[int]
    token_ids: list[int]
    columns: tuple[str, ...]
    tokens: list[dict[str, Any]] = field(default_factory=list)
    perplexity: float = float("nan")
    mean_entropy: float = float("nan")

    def column(self, name: str) -> list[float]:
        """One score over the completion tokens."""
        return [row[name] for row in self.tokens]

    def as_dict(self) -> dict[str, Any]:
        return {"prompt_token_ids": self.prompt_token_ids, "token_ids": self.token_ids,
                "columns": list(self.columns), "tokens": self.tokens, "perplexity": self.perplexity,
                "mean_entropy": self.mean_entropy}


def encode_completion(lm: LM, completion: Completion) -> list[int]:
    """Token ids of a completion: text tokenized without special tokens, or ids as given."""
    if isinstance(completion, str):
        if not completion:
            raise InvalidPrompt("the completion is empty")
        return list(lm.tokenizer(completion, add_special_tokens=False)["input_ids"])
    ids = lm.encode(list(completion)) if completion else []
    if not ids:
        raise InvalidPrompt("the completion is empty")
    return ids


def completion_logprobs(lm: LM, prompts: list[list[int]], completions: list[list[int]],
                        ) -> list[torch.Tensor]:
    """Per pair: log-probabilities [len(completion), V] of the distributions each completion token
    was drawn from, teacher-forced in one padded forward."""
    keep = max(len(c) for c in completions) + 1
    logits, _ = full_logits(lm, [p + c for p, c in zip(prompts, completions)], keep)
    out = []
    for b, c in enumerate(completions):
        out.append(logits[b, keep - 1 - len(c): keep - 1].log_softmax(-1))
    return out


def score(lm: LM, prompt: Prompt | list[Prompt], completion: Completion | list[Completion], *,
          scores: Any = None, chat: bool | None = None) -> ScoreResult | list[ScoreResult]:
    """Token scores of `completion` after `prompt` (lists of both: a batch, one result each).

    `scores`: names as in `dl.generate(..., scores=...)` (default: all of logprob, entropy,
    max_prob, margin). The result's `tokens` rows carry those columns; `perplexity` and
    `mean_entropy` summarise the completion.
    """
    if not isinstance(lm, LM):
        raise InvalidOption("the first argument must be a model from decodelab.load()")
    names = parse_score_names(scores) if scores is not None else tuple(TOKEN_SCORES)
    batch = is_batch(prompt)
    prompts = list(prompt) if batch else [prompt]
    completions = list(completion) if batch else [completion]
    if batch and (not isinstance(completion, (list, tuple)) or len(completions) != len(prompts)):
        raise InvalidOption("a batch of prompts needs a list with one completion per prompt")
    encoded = [lm.encode(p, chat=chat) for p in prompts]
    targets = [encode_completion(lm, c) for c in completions]
    results = []
    for p, c, logprobs in zip(encoded, targets, completion_logprobs(lm, encoded, targets)):
        columns = score_columns(names, logprobs, torch.tensor(c))
        summary = score_columns(("logprob", "entropy"), logprobs, torch.tensor(c))
        rows = [{"position": j, "token_id": t, "text": lm.token_text(t), **{n: columns[n][j] for n in names}}
                for j, t in enumerate(c)]
        results.append(ScoreResult(p, c, names, rows, perplexity(summary["logprob"]), mean(summary["entropy"])))
    return results if batch else results[0]


def summary_quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile of token scores (linear interpolation), the cascades' summary."""
    if not values:
        return float("nan")
    return float(torch.quantile(torch.tensor(values, dtype=torch.float64), q))


__all__ = ["score", "ScoreResult", "completion_logprobs", "encode_completion", "summary_quantile"]
