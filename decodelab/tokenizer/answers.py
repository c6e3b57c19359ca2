"""Greedy short answers of a model to many plain-text prompts, in batches, with a progress bar.

Shared by the digit-grouping evaluation (Singh & Strouse 2024, "Tokenization counts: the impact of
tokenization on arithmetic in frontier LLMs") and the character-level suite (Uzan & Pinter 2025,
"CharBench: Evaluating the Role of Tokenization in Character-Level Tasks").

Example:
    >>> import decodelab as dl
    >>> lm = dl.load("tiny-random", vocab_size=64)
    >>> len(answer_prompts(lm, ["Q: 1 + 1 = ?\\nA:"] * 3, max_new_tokens=2, batch_size=2, label=None))
    3
"""

from __future__ import annotations

import re
from typing import Any

from ..decoding.generate import generate


def answer_prompts(lm: Any, prompts: list[str], *, max_new_tokens: int, batch_size: int,
                   label: str | None = "answering") -> list[str]:
    """The greedy continuation of each prompt up to its first newline (no chat template)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    texts: list[str] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True, disable=label is None) as bar:
        task = bar.add_task(label or "", total=len(prompts))
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            outs = generate(lm, batch, chat=False, temperature=0, max_new_tokens=max_new_tokens, stop=["\n"])
            texts += [o.text.split("\n", 1)[0].strip() for o in outs]
            bar.advance(task, len(batch))
    return texts


def first_integer(text: str, separators: str = ", ") -> int | None:
    """The first integer in an answer, digit groups joined (`'13,023 apples'` -> 13023); None if none."""
    match = re.search(r"-?\d+(?:[" + re.escape(separators) + r"]\d+)*", text)
    if match is None:
        return None
    return int(re.sub(r"[^\d-]", "", match.group(0)))


__all__ = ["answer_prompts", "first_integer"]
