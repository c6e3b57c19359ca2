"""Step-consistent attention: a few-token forward over a cache equals one-token steps bit for bit.

A speculative verify forwards n new tokens at once; plain decoding forwards them one at a time.
Lossless speculation promises the tokens plain decoding would give, so both must compute the same
numbers. The linear layers already do (the packed int4/int8 kernels are row-invariant, see
`engine.quantized_linear`), but SDPA does not: its n-query call reduces in another order than its
one-query call (and for grouped-query models Hugging Face's one-query call packs the head group as
the query axis). In float32 that moves logits by ~1e-6; with bfloat16 activations it moved
SmolLM2's int4 logits by up to 0.5 and sent greedy speculative output off plain greedy's path on
60% of the mixed suite.

So for a forward of 2..`STEP_CONSISTENT_MAX_QUERIES` new tokens of one row over a cache, each
query gets its own one-query SDPA call, without a mask, over exactly the keys it may see: the cache
and the new tokens up to its own (a chain), or the cache and its ancestors (a token tree, gathered).
That is the call a plain step makes once the accepted tokens are in the cache. Everything else
(prefill, one-token steps, batches of several rows, whose plain steps attend through padding
masks anyway) goes to SDPA unchanged. The extra calls cost little next to
the weight reads for chains of a few tokens (t(4) +5% on Qwen 1.5B int4, +22% on SmolLM2); adaptive
methods measure t(n) with it.

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
# every verify size: a draft tree of speculative.tree_shape.MAX_TREE_NODES nodes plus the pending token
# (tests check it); longer forwards (prefill, joining rows) take SDPA's one call
STEP_CONSISTENT_MAX_QUERIES = 257


def step_consistent_sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Hugging Face attention interface: SDPA, with one call per query for few-token cached forwards
    of one row."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, _, new, _ = query.shape
    keys = key.shape[2]
    if batch != 1 or not 2 <= new <= STEP_CONSISTENT_MAX_QUERIES or keys <= new:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("is_causal", None)
    outputs = []
    for i in range(new):
        row_keys, row_values = _visible(key, value, attention_mask, i, keys - new + i + 1)
        out, _ = sdpa_attention_forward(module, query[:, :, i:i + 1], row_keys, row_values, None, **kwargs)
        outputs.append(out)
    return torch.cat(outputs, 1), None  # [1, new, heads, dim], as SDPA's own output


def _visible(key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, query: int, causal_end: int,
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys and values query `query` may attend to, in cache order, as a plain step would hold
    them: a prefix view when they are one (chains), gathered otherwise (a token tree's ancestors)."""
    if mask is None:
        return key[:, :, :causal_end], value[:, :, :causal_end]
    row = mask[0, 0, query, :causal_end]
    allowed = row if row.dtype == torch.bool else row == 0  # boolean, or additive 0 / -inf
    count = int(allowed.sum())
    if bool(allowed[:count].all()):
        return key[:, :, :count], value[:, :, :count]
    index = allowed.nonzero().flatten()
    return key.index_select(2, index), value.index_select(2, index)


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
