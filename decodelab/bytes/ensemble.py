"""Cross-vocabulary ensembles at the byte level: models with different tokenizers, one byte law.

Phan et al. (2024) and Hayase et al. (2025) (see `bytelm`): once each model is a byte-level LM,
models with different vocabularies share one outcome space (256 bytes and end of text), so they
can be combined byte by byte.

- mode="mixture": the exact mixture of the models' text laws, P(text) = sum_i w_i P_i(text).
  Its next-byte law weights each model by its posterior given the prefix:
  p(b | x) = sum_i w_i P_i(x) p_i(b | x) / sum_i w_i P_i(x).
- mode="product": a product of experts per byte, p(b | x) proportional to prod_i p_i(b | x)^w_i,
  renormalised at every byte (a different model of text, not a mixture of the two).

Example:
    >>> import decodelab as dl
    >>> a, b = dl.load("tiny-random", vocab_size=64, seed=0), dl.load("tiny-random", vocab_size=64, seed=1)
    >>> ens = Ensemble([a, b], mode="mixture")
    >>> round(float(ens.next_byte_logprobs(b"th").exp().sum()), 6)
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch

from ..errors import InvalidOption, InvalidPrompt
from ..models.lm import LM
from .bytelm import ByteLM, _as_bytes
from .vocab import END


class Ensemble:
    """Byte-level ensemble of models (LMs or ByteLMs), with `next_byte_logprobs`, `logprob`, `sample`."""

    def __init__(self, models: Sequence[LM | ByteLM], weights: Sequence[float] | None = None,
                 mode: Literal["mixture", "product"] = "mixture", **byte_options: Any):
        if len(models) < 1:
            raise InvalidOption("an ensemble needs at least one model")
        if mode not in ("mixture", "product"):
            raise InvalidOption(f"mode must be 'mixture' or 'product', got {mode!r}")
        weights = [1.0 / len(models)] * len(models) if weights is None else [float(w) for w in weights]
        if len(weights) != len(models) or any(not 0 <= w <= 100 or math.isnan(w) for w in weights):
            raise InvalidOption("weights: one number in [0, 100] per model")
        if mode == "mixture":
            if sum(weights) <= 0:
                raise InvalidOption("mixture weights must not all be zero")
            weights = [w / sum(weights) for w in weights]
        self.members = [m if isinstance(m, ByteLM) else ByteLM(m, **byte_options) for m in models]
        self.weights = weights
        self.mode = mode
        self._chain: dict[bytes, float] = {b"": 0.0}

    def next_byte_logprobs(self, prefix: bytes) -> torch.Tensor:
        """Log-probabilities [257] of the next byte (index 256: end of text)."""
        prefix = _as_bytes(prefix)
        laws = torch.stack([_safe_law(m, prefix) for m in self.members])
        log_w = torch.tensor([math.log(w) if w > 0 else float("-inf") for w in self.weights], dtype=torch.float64)
        if self.mode == "mixture":
            posterior = log_w + torch.tensor([_safe_logprob(m, prefix) for m in self.members], dtype=torch.float64)
            posterior = posterior - torch.logsumexp(posterior, 0)
            return torch.logsumexp(posterior[:, None] + laws, 0)
        weights = torch.tensor(self.weights, dtype=torch.float64)[:, None]
        scores = torch.where(weights > 0, weights * laws, torch.zeros_like(laws)).sum(0)
        if not bool(torch.isfinite(scores).any()):
            raise InvalidPrompt("the text so far has probability zero under the product of the models")
        return scores - torch.logsumexp(scores, 0)

    def logprob(self, data: bytes, *, end: bool = False) -> float:
        """log P(the text starts with `data`) (with end=True: is exactly `data`), as the chain of
        the ensemble's next-byte laws."""
        data = _as_bytes(data)
        known = max(i for i in range(len(data) + 1) if data[:i] in self._chain)
        total = self._chain[data[:known]]
        for i in range(known, len(data)):
            total += float(self.next_byte_logprobs(data[:i])[data[i]])
            self._chain[data[: i + 1]] = total
        if end:
            total += float(self.next_byte_logprobs(data)[END])
        return total

    def sample(self, max_bytes: int = 256, *, prefix: bytes = b"", seed: int | None = None) -> bytes:
        """Draw a continuation of `prefix` byte by byte from the ensemble."""
        if not 1 <= int(max_bytes) <= 1_000_000:
            raise InvalidOption(f"max_bytes must be in 1..1000000, got {max_bytes}")
        gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
        text = _as_bytes(prefix)
        for _ in range(int(max_bytes)):
            b = int(torch.multinomial(self.next_byte_logprobs(text).exp(), 1, generator=gen))
            if b == END:
                break
            text += bytes([b])
        return text[len(prefix):]


def _safe_law(member: ByteLM, prefix: bytes) -> torch.Tensor:
    """The member's next-byte law, all -inf when the model cannot produce the prefix."""
    try:
        return member.next_byte_logprobs(prefix)
    except InvalidPrompt:
        return torch.full((END + 1,), float("-inf"), dtype=torch.float64)


def _safe_logprob(member: ByteLM, prefix: bytes) -> float:
    """log P_i(prefix), -inf when the model cannot produce it."""
    try:
        return member.logprob(prefix)
    except InvalidPrompt:
        return float("-inf")
