"""Step-consistent attention: a few-token forward over a cache equals one-token steps bit for bit.

A speculative verify forwards n new tokens at once; plain decoding forwards them one at a time.
Lossless speculation promises the tokens plain decoding would give, so both must compute the same
numbers. The linear layers already do (the packed int4/int8 kernels are row-invariant, see
`engine.quantized_linear`), but SDPA does not: its n-query call reduces in another order than its
one-query call (and for grouped-query models Hugging Face's one-query call packs the head group as
the query axis). In float32 that moves logits by ~1e-6; with bfloat16 activations it moved
SmolLM2's int4 logits by up to 0.5 and sent greedy speculative output off plain greedy's path on
60% of the mixed suite.

So for a forward of 2..`STEP_CONSISTENT_MAX_QUERIES` new tokens over a cache with a causal (boolean)
mask, each query gets its own one-query SDPA call over the keys up to its position, without a
mask where it hides nothing: for one row without holes that is exactly the call a plain step
makes. Everything else (prefill, one-token steps, token trees with their additive masks, whose
plain steps see another key layout anyway) goes to SDPA unchanged. The extra calls cost little next to
the weight reads (n small attention calls per layer).

Example:
    >>> import decodelab as dl
    >>> lm = dl.load("tiny-random", vocab_size=64)
    >>> lm.model.config._attn_implementation
    'decodelab_sdpa'
"""

from __future__ import annotations

from typing import Any

import torch

STEP_CONSISTENT_ATTENTION = "decodelab_sdpa"
STEP_CONSISTENT_MAX_QUERIES = 32


def step_consistent_sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Hugging Face attention interface: SDPA, with one call per query for few-token cached forwards."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    new, keys = query.shape[2], key.shape[2]
    boolean_mask = attention_mask is None or attention_mask.dtype == torch.bool
    if not boolean_mask or not 2 <= new <= STEP_CONSISTENT_MAX_QUERIES or keys <= new:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("is_causal", None)
    outputs = []
    for i in range(new):
        visible = keys - new + i + 1  # the cache, then the new tokens up to this one
        row_mask = None if attention_mask is None else attention_mask[:, :, i:i + 1, :visible]
        if row_mask is not None and bool(row_mask.all()):
            row_mask = None  # what a plain step passes when nothing is hidden
        out, _ = sdpa_attention_forward(module, query[:, :, i:i + 1], key[:, :, :visible], value[:, :, :visible],
                                        row_mask, **kwargs)
        outputs.append(out)
    return torch.cat(outputs, 1), None  # [B, new, heads, dim], as SDPA's own output


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(STEP_CONSISTENT_ATTENTION, step_consistent_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(STEP_CONSISTENT_ATTENTION, sdpa_mask)


def use_step_consistent_attention(model: Any) -> None:
    """Switch a model that runs SDPA to step-consistent SDPA (other implementations are left alone)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return
    _register()
    config._attn_implementation = STEP_CONSISTENT_ATTENTION


__all__ = ["STEP_CONSISTENT_ATTENTION", "STEP_CONSISTENT_MAX_QUERIES", "step_consistent_sdpa",
           "use_step_consistent_attention"]
