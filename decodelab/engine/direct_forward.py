"""A cached few-token forward of one row that skips Hugging Face's per-layer glue.

Why: with 4-bit weights the matrix products of a SmolLM2-135M decoding step take ~5.6 of its
~21 ms (AMD EPYC, 2 threads, context 300) and attention ~4.5; the remaining ~11 ms is the
model's Python around them -- module calls, keyword plumbing, decorators, mask construction --
for 30 layers. llama.cpp decodes the same file in ~10 ms. This forward makes the same calls on
the same submodules (norms, projections, MLP, embedding, head, rotary embedding) and the same
step-consistent attention (`models.attention`), in the order and with the tensor operations of
transformers' Llama / Qwen2 decoder layer, minus that glue. Its logits equal the model's own bit
for bit (`tests/engine/test_direct_forward.py` checks chains, trees, and both architectures), so
it changes speed only: speculative verifies and plain steps both take it, and a verify still
computes what the steps compute.

With the C layers it also takes a batch's cached forwards (padded rows, chains or token trees):
each token attends to exactly the slots its own row may see, in cache order, so a batch row whose
cache holds the same keys computes what it would alone.

Where it does not apply, `Sequence` calls the model as before: prefill and forwards longer than
`STEP_CONSISTENT_MAX_QUERIES`, batches of several rows on the PyTorch glue, forwards that keep
hidden states, models with forward hooks (attribution and uncertainty methods install them),
sliding-window layers, other architectures and attention implementations.

Example:
    >>> import decodelab as dl
    >>> from decodelab.engine.direct_forward import DirectForward
    >>> lm = dl.load("tiny-random", vocab_size=32)
    >>> DirectForward.of(lm.model) is not None
    True
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as torch_module

from ..models.attention import STEP_CONSISTENT_ATTENTION, STEP_CONSISTENT_MAX_QUERIES, step_consistent_sdpa
from .native_layers import NativeLayers, visible_slots

# decoder layers whose forward this one reproduces (transformers 5.x: same layer structure)
SUPPORTED_ARCHITECTURES = frozenset({"LlamaForCausalLM", "Qwen2ForCausalLM"})
_ATTRIBUTE = "_decodelab_direct_forward"


class DirectForward:
    """The forward of one model's decoder stack for `Sequence`'s cached few-token forwards."""

    def __init__(self, model: nn.Module):
        self.model = model
        base = model.model
        self.base = base
        self.layers = list(base.layers[: model.config.num_hidden_layers])
        attention = self.layers[0].self_attn
        # the model file's own rotary function: the same one its attention calls
        self.apply_rotary = sys.modules[type(attention).__module__].apply_rotary_pos_emb
        # the head is called as a module (its hooks run: `models.weights` casts logits to float32
        # with one); every other module's hooks would be skipped
        head = model.get_output_embeddings()
        # the hook dicts themselves (registering a hook adds to them): `any` over them is one C loop
        self.hook_dicts = [hooks for m in model.modules() if m is not head
                           for hooks in (m._forward_hooks, m._forward_pre_hooks)]
        self.sliding = any(getattr(layer.self_attn, "sliding_window", None) is not None for layer in self.layers)
        # the layers in C where the weights are decodelab's packed ones (None: PyTorch glue below)
        self.native = NativeLayers.of(model)

    @classmethod
    def of(cls, model: nn.Module) -> DirectForward | None:
        """The model's direct forward (built once), or None for architectures it does not cover."""
        found = getattr(model, _ATTRIBUTE, False)
        if found is False:
            found = cls(model) if type(model).__name__ in SUPPORTED_ARCHITECTURES else None
            setattr(model, _ATTRIBUTE, found)
        return found

    def applies(self, new_tokens: int, cached: int, rows: int = 1) -> bool:
        """Whether a forward of `new_tokens` over `cached` slots for `rows` rows can take this path
        now (several rows: only on the C layers)."""
        return (0 < cached and new_tokens <= STEP_CONSISTENT_MAX_QUERIES and not self.sliding
                and (rows == 1 or self.native is not None)
                and self.model.config._attn_implementation == STEP_CONSISTENT_ATTENTION
                and not self.model.training and not _has_hooks(self.hook_dicts))

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, cache: Any, mask: torch.Tensor | None, *,
                 last_only: bool) -> torch.Tensor:
        """Logits [B, n or 1, V] of `tokens` [B, n] at `positions` [B, n], appended to `cache`.
        `mask` is None (every row sees its whole cache), a key mask [B, slots] (padded rows, a
        chain), or the additive [B, 1, n, slots] mask of token trees; `slots` counts the new tokens."""
        hidden = self.base.embed_tokens.forward(tokens)
        cos, sin = self.base.rotary_emb.forward(hidden, position_ids=positions)
        if self.native is not None and hidden.dtype == cos.dtype == torch.bfloat16:
            visible = self._visible(mask, tokens.shape[0], tokens.shape[1], cache.get_seq_length() + tokens.shape[1])
            hidden = self.native.forward(hidden, cos, sin, cache, visible)
            return self._head(hidden, last_only)
        if tokens.shape[0] != 1 or (mask is not None and mask.ndim != 4):
            raise ValueError("the direct forward's PyTorch glue takes one row without holes")
        tree_mask = mask
        for layer in self.layers:
            attention, mlp = layer.self_attn, layer.mlp
            residual = hidden
            x = layer.input_layernorm.forward(hidden)
            shape = (*x.shape[:-1], -1, attention.head_dim)
            query = attention.q_proj.forward(x).view(shape).transpose(1, 2)
            key = attention.k_proj.forward(x).view(shape).transpose(1, 2)
            value = attention.v_proj.forward(x).view(shape).transpose(1, 2)
            query, key = self.apply_rotary(query, key, cos, sin)
            key, value = cache.update(key, value, attention.layer_idx)
            out, _ = step_consistent_sdpa(attention, query, key, value, tree_mask, dropout=0.0,
                                          scaling=attention.scaling)
            out = out.reshape(*x.shape[:-1], -1).contiguous()
            hidden = residual + attention.o_proj.forward(out)
            residual = hidden
            x = layer.post_attention_layernorm.forward(hidden)
            hidden = residual + mlp.down_proj.forward(mlp.act_fn(mlp.gate_proj.forward(x)) * mlp.up_proj.forward(x))
        return self._head(hidden, last_only)

    @staticmethod
    def _visible(mask: torch.Tensor | None, batch: int, new: int, slots: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per new token (row-major over [batch, new]), the cache slots it may see, for the C layers."""
        if mask is not None and mask.ndim == 4:  # token trees: additive 0 / -inf
            allowed = mask[:, 0, :, :slots] == 0
        else:  # chains: a key mask (or none), and causal among the new tokens
            valid = torch.ones(batch, slots, dtype=torch.bool) if mask is None else mask[:, :slots].bool()
            causal = torch.arange(slots)[None] <= torch.arange(slots - new, slots)[:, None]  # [new, slots]
            allowed = valid[:, None, :] & causal[None]
        return visible_slots(allowed.reshape(batch * new, slots))

    def _head(self, hidden: torch.Tensor, last_only: bool) -> torch.Tensor:
        hidden = self.base.norm.forward(hidden)
        if last_only:
            hidden = hidden[:, -1:, :]
        return self.model.get_output_embeddings()(hidden)


def _has_hooks(hook_dicts: list[dict]) -> bool:
    """Whether any forward hook could see a module call (the direct path would skip it)."""
    return bool(torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks or any(hook_dicts))


__all__ = ["SUPPORTED_ARCHITECTURES", "DirectForward"]
