"""One forward over whole texts (no KV cache kept): teacher-forced scoring and attribution.

Rows of different lengths are left-padded into one batch with a 2D key mask and explicit
positions, as `Sequence.prefill` does, so that row b's logits are those of its text alone. Only the
last `keep` positions' logits are computed (the completion's), which bounds memory to
[B, keep, V] rather than [B, L, V].
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import torch

from ..errors import InvalidPrompt, PromptTooLong
from ..models.lm import LM


def padded_batch(lm: LM, rows: Seq[Seq[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens [B, L], key mask [B, L] long, positions [B, L]) for left-padded rows."""
    if not rows or any(len(r) == 0 for r in rows):
        raise InvalidPrompt("every row needs at least one token")
    width = max(len(r) for r in rows)
    if width > lm.context_length:
        raise PromptTooLong(f"{width} tokens exceed the context length of {lm.context_length}")
    tokens = torch.full((len(rows), width), lm.pad_token_id, dtype=torch.long)
    valid = torch.zeros(len(rows), width, dtype=torch.long)
    for b, row in enumerate(rows):
        tokens[b, width - len(row):] = torch.as_tensor(list(row), dtype=torch.long)
        valid[b, width - len(row):] = 1
    positions = (valid.cumsum(-1) - 1).clamp(min=0)
    return tokens.to(lm.device), valid.to(lm.device), positions.to(lm.device)


def full_logits(lm: LM, rows: Seq[Seq[int]], keep: int, *, attentions: bool = False,
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """Float32 logits [B, keep, V] at the last `keep` positions of each row (position j scores the
    token after it), in one forward; with `attentions`, also every layer's attention weights
    [B, heads, L, L] (the model must run eager attention for them).

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=32)
        >>> logits, _ = full_logits(lm, [[1, 5, 6, 7], [1, 9]], keep=2)
        >>> tuple(logits.shape)
        (2, 2, 32)
    """
    tokens, valid, positions = padded_batch(lm, rows)
    mask = None if bool(valid.all()) else valid
    kwargs = {"output_attentions": True} if attentions else {}
    with torch.inference_mode():
        out = lm.model(input_ids=tokens, attention_mask=mask, position_ids=positions, use_cache=False,
                       logits_to_keep=keep, **kwargs)
    return out.logits.float(), (tuple(out.attentions) if attentions else None)


__all__ = ["padded_batch", "full_logits"]
