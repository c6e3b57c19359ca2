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

Where it does not apply, `Sequence` calls the model as before: prefill and forwards longer than
`STEP_CONSISTENT_MAX_QUERIES`, batches of several rows, forwards that keep hidden states, models
with forward hooks (attribution and uncertainty methods install them), sliding-window layers,
other architectures and attention implementations.

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

from ..models.attention import (
    STEP_CONSISTENT_ATTENTION,
    STEP_CONSISTENT_MAX_QUERIES,
    _visible_keys,
    step_consistent_sdpa,
)
from .native_layers import NativeLayers

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
        self.modules = [m for m in model.modules() if m is not head]
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

    def applies(self, new_tokens: int, cached: int) -> bool:
        """Whether a forward of `new_tokens` over `cached` slots can take this path now."""
        return (0 < cached and new_tokens <= STEP_CONSISTENT_MAX_QUERIES and not self.sliding
                and self.model.config._attn_implementation == STEP_CONSISTENT_ATTENTION
                and not self.model.training and not _has_hooks(self.modules))

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, cache: Any,
                 tree_mask: torch.Tensor | None, *, last_only: bool) -> torch.Tensor:
        """Logits [1, n or 1, V] of `tokens` [1, n] at `positions` [1, n], appended to `cache`.
        `tree_mask` is the additive [1, 1, n, slots] mask of a token tree, None for a chain."""
        hidden = self.base.embed_tokens.forward(tokens)
        cos, sin = self.base.rotary_emb.forward(hidden, position_ids=positions)
        if self.native is not None and hidden.dtype == cos.dtype == torch.bfloat16:
            new = tokens.shape[1]
            visible = _visible_keys(tree_mask, new, cache.get_seq_length() + new)
            hidden = self.native.forward(hidden, cos, sin, cache, visible)
            return self._head(hidden, last_only)
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

    def _head(self, hidden: torch.Tensor, last_only: bool) -> torch.Tensor:
        hidden = self.base.norm.forward(hidden)
        if last_only:
            hidden = hidden[:, -1:, :]
        return self.model.get_output_embeddings()(hidden)


def _has_hooks(modules: list[nn.Module]) -> bool:
    """Whether any forward hook could see a module call (the direct path would skip it)."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


__all__ = ["SUPPORTED_ARCHITECTURES", "DirectForward"]
