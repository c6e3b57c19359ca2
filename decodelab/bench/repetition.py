"""Repetition metrics for generated text (Xu, Yang, Luo, Song & Zhang 2022, "Learning to Break the
Loop: Analyzing and Mitigating Repetitions for Neural Text Generation"; Welleck et al. 2020 for
rep-n; Li et al. 2016 for distinct-n).

- `rep_n(ids, n)`: the share of a text's n-grams that repeat an earlier n-gram of the same text
  (1 - unique / total).
- `distinct_n(texts, n)`: unique n-grams over all n-grams of a set of outputs.
- `self_reinforcement(lm, sentences, repeats)`: the self-reinforcement curve — the mean
  probability the model gives the tokens of a sentence when it has already been written k times
  in a row before it, for k = 0..repeats (Xu et al.'s TP); it climbs as repetitions pile up.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..models.lm import LM


def _ngrams(ids: Sequence[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]


def rep_n(ids: Sequence[int], n: int) -> float:
    """Share of repeated n-grams in one text (0 for a text shorter than n).

    Example:
        >>> rep_n([1, 2, 1, 2, 1, 2], 2)
        0.6
    """
    grams = _ngrams(ids, n)
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def distinct_n(texts: Sequence[Sequence[int]], n: int) -> float:
    """Unique n-grams over all n-grams of several texts.

    Example:
        >>> distinct_n([[1, 2, 3], [1, 2, 4]], 2)
        0.75
    """
    grams = [g for ids in texts for g in _ngrams(ids, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_reinforcement(lm: LM, sentences: Sequence[str], repeats: int = 8) -> list[float]:
    """Mean token probability of a sentence after k earlier copies of it, k = 0..repeats (averaged
    over the sentences); one forward per sentence over all copies.

    Example:
        >>> import decodelab as dl
        >>> curve = self_reinforcement(dl.load("tiny-random", vocab_size=64), ["ab ab. "], repeats=2)
        >>> len(curve)
        3
    """
    curves = []
    for sentence in sentences:
        ids = lm.tokenizer.encode(sentence, add_special_tokens=False)
        if not ids:
            continue
        copies = ids * (repeats + 1)
        tokens = torch.tensor([copies[: lm.context_length]], device=lm.device)
        with torch.inference_mode():
            logits = lm.model(input_ids=tokens).logits[0].float()
        probs = logits[:-1].softmax(-1).gather(-1, tokens[0, 1:, None]).squeeze(-1)
        per_copy = []
        for k in range(repeats + 1):
            start, end = k * len(ids), (k + 1) * len(ids)
            part = probs[max(start - 1, 0):end - 1]  # predictions of copy k's tokens (copy 0 loses its first)
            per_copy.append(float(part.mean()) if len(part) else float("nan"))
        curves.append(per_copy)
    return [sum(c[k] for c in curves) / len(curves) for k in range(repeats + 1)]


def plot_self_reinforcement(curves: dict[str, list[float]], path: str | Path) -> Path:
    """Line plot of one or more curves (label -> values) to a PNG."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 3.2))
    axis = figure.subplots()
    for label, values in curves.items():
        axis.plot(range(len(values)), values, marker="o", label=label)
    axis.set_xlabel("earlier repetitions of the sentence")
    axis.set_ylabel("mean token probability")
    axis.set_title("self-reinforcement of repetitions")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return Path(path)
