"""FrugalPrompt: compress a prompt by keeping its most attributed tokens.

Raj et al. (2025), "FrugalPrompt: Reducing Contextual Overhead in Large Language Models via Token
Attribution": score every prompt token by its attribution to the model's answer, keep the top
fraction in their original order, and drop the rest. Here the attribution is ReAGent's
(`dl.attribute`), averaged over the answer's tokens; with a chat model only the user's text is
compressed (the template stays). Dropping tokens is lossy by nature: `docs/benchmarks.md` reports
how much answer quality is kept against tokens removed.

Example:
    >>> import decodelab as dl
    >>> lm = dl.load("tiny-random", vocab_size=32)
    >>> c = dl.compress(lm, "the cat sat", keep=0.5, chat=False, max_new_tokens=2, max_steps=2, probes=4)
    >>> c.kept_tokens <= c.original_tokens
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidOption, InvalidPrompt
from ..models.lm import LM
from .reagent import Attribution, attribute


@dataclass
class CompressedPrompt:
    """The compressed text, which prompt tokens were kept, and the attribution behind it."""

    text: str
    kept_positions: list[int]  # positions in the encoded prompt
    original_tokens: int
    kept_tokens: int
    attribution: Attribution

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "kept_positions": self.kept_positions, "original_tokens": self.original_tokens,
                "kept_tokens": self.kept_tokens, "ratio": self.kept_tokens / max(1, self.original_tokens),
                "prompt_tokens": self.attribution.prompt_tokens,
                "prompt_importance": self.attribution.prompt_importance(), "output": self.attribution.text}


def text_span(lm: LM, ids: list[int], text: str) -> list[int]:
    """Positions of the text's own tokens inside an encoded prompt (the user turn of a chat
    template); the whole prompt minus special tokens when the text is not found as a run."""
    own = list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    for start in range(len(ids) - len(own), -1, -1):  # the last occurrence: the user turn
        if own and ids[start:start + len(own)] == own:
            return list(range(start, start + len(own)))
    special = set(getattr(lm.tokenizer, "all_special_ids", []) or [])
    return [i for i, t in enumerate(ids) if t not in special]


def compress(lm: LM, prompt: str, *, keep: float = 0.5, output: str | list[int] | None = None,
             chat: bool | None = None, **options: Any) -> CompressedPrompt:
    """Keep the `keep` fraction (at least one token) of the prompt's tokens with the highest mean
    ReAGent importance for the answer (`output`, or generated with the remaining options).
    ReAGent options (probes, max_steps, ...) are accepted as in `dl.attribute`."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidPrompt("compress takes a non-empty text prompt")
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise InvalidOption(f"keep must be a fraction in (0, 1], got {keep!r}")
    ids = lm.encode(prompt, chat=chat)
    span = text_span(lm, ids, prompt)
    a = attribute(lm, ids, output, positions=span, **options)
    importance = a.prompt_importance()
    count = max(1, math.ceil(keep * len(span)))
    chosen = sorted(sorted(span, key=lambda i: -importance[i])[:count])
    text = lm.decode([ids[i] for i in chosen])
    return CompressedPrompt(text, chosen, len(span), len(chosen), a)


__all__ = ["compress", "CompressedPrompt", "text_span"]
