"""Critical tokens: the tokens of an output whose likelihood differs most between two contexts.

Lin et al. (2024), "Critical Tokens Matter: Token-Level Contrastive Estimation Enhances LLM's
Reasoning Capability": tokens that lead a reasoning trajectory to a wrong outcome are found by
contrastive estimation, log p_pos(y_t) - log p_neg(y_t), between a model that leans to correct and
one that leans to incorrect outcomes. Here the two sides are given directly: two models (`contrast`
= another LM) or two prompts (`contrast_prompt`, e.g. with and without a hint); every output token
gets `contrast[t] = log p_a(y_t | prompt, y_<t) - log p_b(y_t | ...)`, teacher-forced in one forward
per side, and the largest ones are the critical tokens (those side a chose and side b would not
have). The paper's training of the contrastive models is not part of this.

Example:
    >>> import decodelab as dl
    >>> a, b = dl.load("tiny-random", vocab_size=32), dl.load("tiny-random", vocab_size=32, seed=1)
    >>> c = critical_tokens(a, [1, 5, 6], [7, 8, 9], contrast=b, top=1)
    >>> len(c.critical)
    1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InvalidOption
from ..models.lm import LM, Prompt
from ..uncertainty.score import score


@dataclass
class CriticalTokens:
    output_token_ids: list[int]
    output_tokens: list[str]
    contrast: list[float]  # per output token: log p_a - log p_b
    critical: list[int]  # output positions, most critical first

    def as_dict(self) -> dict[str, Any]:
        return {"output_token_ids": self.output_token_ids, "output_tokens": self.output_tokens,
                "contrast": self.contrast, "critical": self.critical}


def critical_tokens(lm: LM, prompt: Prompt, output: str | list[int], *, contrast: LM | None = None,
                    contrast_prompt: Prompt | None = None, top: int = 5, chat: bool | None = None) -> CriticalTokens:
    """Contrastive log-likelihood of each output token between (lm, prompt) and (contrast or lm,
    contrast_prompt or prompt); `critical` lists the `top` positions where side b is least willing."""
    if (contrast is None) == (contrast_prompt is None):
        raise InvalidOption("give exactly one of contrast (a second model) or contrast_prompt (a second prompt)")
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 4096:
        raise InvalidOption(f"top must be an integer in [1, 4096], got {top!r}")
    other = contrast if contrast is not None else lm
    if not isinstance(other, LM):
        raise InvalidOption("contrast must be a model from decodelab.load()")
    a = score(lm, prompt, output, scores="logprob", chat=chat)
    same_vocab = other is lm or other.shares_vocabulary(lm)
    b_output = a.token_ids if same_vocab else output
    b = score(other, contrast_prompt if contrast_prompt is not None else prompt, b_output, scores="logprob", chat=chat)
    if b.token_ids != a.token_ids:
        raise InvalidOption("the two models tokenize the output differently; use models with one tokenizer")
    values = [x - y for x, y in zip(a.column("logprob"), b.column("logprob"))]
    order = sorted(range(len(values)), key=lambda t: values[t], reverse=True)[:top]
    return CriticalTokens(a.token_ids, [r["text"] for r in a.tokens], values, order)


__all__ = ["critical_tokens", "CriticalTokens"]
