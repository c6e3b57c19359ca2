"""Step-consistent attention: a few-token forward over a cache equals one-token steps bit for bit.

A speculative verify forwards n new tokens at once; plain decoding forwards them one at a time.
Lossless speculation promises the tokens plain decoding would give, so both must compute the same
numbers. The linear layers already do (the packed int4/int8 kernels are row-invariant, see
`engine.quantized_linear`), but SDPA does not: its n-query call reduces in another order than its
one-query call (and for grouped-query models Hugging Face's one-query call packs the head group as
the query axis). In float32 that moves logits by ~1e-6; with bfloat16 activations it moved
SmolLM2's int4 logits by up to 0.5 and sent greedy speculative output off plain greedy's path on
60% of the mixed suite.

So every forward of 1..`STEP_CONSISTENT_MAX_QUERIES` new tokens of one row over a cache -- plain
steps included -- gives each query its own one-query SDPA call, without a mask, over exactly the
keys it may see: the cache and the new tokens up to its own (a chain), or the cache and its
ancestors (a token tree, gathered). A verify thus makes, per node, the call a plain step makes once
the accepted tokens are in the cache. (One-token forwards with a mask -- a one-node tree, which
adaptive tree sizes send -- once went to masked SDPA, which on long prompts rounds otherwise than
the unmasked step, and broke token recycling's exactness on 2 of 72 prompts.)

These few-query calls, and a batch of rows' one-query steps (which attend through padding masks,
as their plain steps do), compute in float32 whatever the model's dtype: torch 2.13's CPU SDPA
takes 5-8x longer for one query over bfloat16 keys than over float32 ones (Qwen 1.5B's shape, 300
keys: 506 vs 62 us; 2000 keys: 2972 vs 384 us), which made attention, not the weights, most of a
bfloat16-activation verify (t(4) of Qwen 1.5B int4: 88 of 120 ms). Prefill (no cache yet, or more
than `STEP_CONSISTENT_MAX_QUERIES` tokens) goes to SDPA unchanged.

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
    """Hugging Face attention interface: SDPA, with one float32 call per query for few-token cached
    forwards of one row, in float32 for a batch's steps, and unchanged for prefill."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, _, new, _ = query.shape
    keys = key.shape[2]
    if new > STEP_CONSISTENT_MAX_QUERIES or keys <= new:  # prefill, long forwards: SDPA's one call
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    # few queries over a cache: in float32 (see the module docstring: torch's CPU SDPA takes 5-8x
    # longer over bfloat16 keys than over float32 ones for one query)
    dtype = query.dtype
    query, key, value = _float32(query), _float32(key), _float32(value)
    if batch != 1:  # padded rows attend through their masks, as their plain steps do
        mask = attention_mask.to(torch.float32) if attention_mask is not None and attention_mask.is_floating_point() \
            else attention_mask
        output, _ = sdpa_attention_forward(module, query, key, value, mask, **kwargs)
        return output.to(dtype), None
    # one row: every query (a plain step's one too, and a one-node tree's, which comes with a mask)
    # gets its own unmasked call over exactly the keys it may see
    kwargs.pop("is_causal", None)
    one_query = _one_query_sdpa(module, key, value, kwargs)
    plan = _visible_keys(attention_mask, new, keys)
    scratch = _TreeScratch(key, value, plan)
    outputs = []
    for i, visible in enumerate(plan):
        if isinstance(visible, int):  # a prefix of the cache: a view, as a plain step's cache
            row_keys, row_values = key[:, :, :visible], value[:, :, :visible]
        else:  # a token tree's node: the cache and its ancestors, laid out contiguously
            row_keys, row_values = scratch.keys_of(*visible)
        outputs.append(one_query(query[:, :, i:i + 1], row_keys, row_values))
    # [1, new, heads, dim], as SDPA's own output
    return torch.cat(outputs, 2).transpose(1, 2).contiguous().to(dtype), None


class _TreeScratch:
    """Per layer call, one copy of the keys and values in which each tree node's ancestors are
    written, in order, right after the cache prefix it sees: the node's keys are then a view, as a
    plain step's are, and a tree costs one O(cache) copy per layer instead of one per node (at 900
    tokens of context an 8-node tree of SmolLM2 took 81 ms against a chain's 45 when every node
    gathered its own copy)."""

    def __init__(self, key: torch.Tensor, value: torch.Tensor, plan: list):
        self.key, self.value = key, value
        self.scratch: tuple[torch.Tensor, torch.Tensor] | None = None
        self.dirty = (0, 0)  # slots [lo, hi) of the scratch that hold another node's ancestors
        if any(not isinstance(visible, int) for visible in plan):
            self.scratch = (key.clone(), value.clone())  # never write into the cache itself

    def keys_of(self, prefix: int, later: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the cache's first `prefix` slots followed by slots `later`."""
        assert self.scratch is not None
        end = prefix + len(later)
        lo, hi = self.dirty
        for scratch, source in zip(self.scratch, (self.key, self.value)):
            if lo < min(hi, prefix):  # an earlier node's ancestors sit inside this node's prefix
                scratch[:, :, lo:min(hi, prefix)] = source[:, :, lo:min(hi, prefix)]
            scratch[:, :, prefix:end] = source.index_select(2, later)
        self.dirty = (prefix, max(hi, end))
        return self.scratch[0][:, :, :end], self.scratch[1][:, :, :end]


def _float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.dtype == torch.float32 else tensor.to(torch.float32)


def _one_query_sdpa(module: torch.nn.Module, key: torch.Tensor, value: torch.Tensor, kwargs: dict):
    """The attention of one query without a mask, computed as a plain step computes it; returns
    [1, heads, 1, dim]. Where Hugging Face's `sdpa_attention_forward` would call torch's SDPA
    directly (no grouped-query repacking), so do we, minus its per-call Python; otherwise through it."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward, use_gqa_in_sdpa

    grouped = getattr(module, "num_key_value_groups", 1) > 1
    if grouped and not use_gqa_in_sdpa(None, key, value):
        def through_hf(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return sdpa_attention_forward(module, q, k, v, None, **kwargs)[0].transpose(1, 2)
        return through_hf
    extra = {"enable_gqa": True} if grouped else {}
    scaling = kwargs.get("scaling")

    def direct(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0,
                                                                scale=scaling, is_causal=False, **extra)
    return direct


# every layer of one forward gets the same mask object: its per-query key sets are worked out once
_last_plan: tuple[torch.Tensor | None, list[int | tuple[int, torch.Tensor]]] = (None, [])


def _visible_keys(mask: torch.Tensor | None, new: int, keys: int) -> list[int | tuple[int, torch.Tensor]]:
    """Per new token, the keys it may attend to, in cache order: a prefix length when they are one
    (chains), else the length of their leading prefix and the indices of the rest (a token tree's
    ancestors)."""
    global _last_plan
    if mask is None:
        return [keys - new + i + 1 for i in range(new)]
    cached_mask, cached_plan = _last_plan  # one read: server threads may replace it meanwhile
    if cached_mask is mask:
        return cached_plan
    rows = mask[0, 0, :, :keys]
    allowed = rows if rows.dtype == torch.bool else rows == 0  # boolean, or additive 0 / -inf
    counts = allowed.sum(-1)
    prefix = (allowed == (torch.arange(keys, device=mask.device)[None] < counts[:, None])).all(-1)
    plan: list[int | tuple[int, torch.Tensor]] = [
        int(count) if is_prefix else _prefix_and_rest(allowed[i].nonzero().flatten())
        for i, (count, is_prefix) in enumerate(zip(counts.tolist(), prefix.tolist()))]
    _last_plan = (mask, plan)
    return plan


def _prefix_and_rest(indices: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Sorted key indices -> (p, rest): indices[:p] are 0..p-1, rest = indices[p:]."""
    leading = indices == torch.arange(len(indices), device=indices.device)
    prefix = int(leading.int().cumprod(0).sum())
    return prefix, indices[prefix:]


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
