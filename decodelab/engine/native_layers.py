"""Decoder layers in C for cached few-token forwards of one row (source: `layer_avx512.c`).

Why: once the weights are 4-bit, a SmolLM2-135M decoding step spends more time in the Python
dispatch of ~80 small tensor operations per layer (norms, rotary embedding, attention plumbing,
residual adds) than in its matrix products. `NativeLayers` runs each layer in two C calls -- norm,
q/k/v and rotary embedding; then attention, o projection, norm and MLP -- with the model's own
packed weights and the int4 kernel of `native_int4`; the first also stores the new keys and
values straight into the cache's buffers (`kv_cache.SlotLayer`; other caches get them through
`update`).

It applies to Llama / Qwen2 layers whose projections are all native `Int4Linear` / `Int8Linear`
(weights "int4", "int8", "auto" on a CPU with AVX-512 BF16), with RMS norms and SiLU, unless
`DECODELAB_NATIVE_LAYERS=0` (then the direct forward's PyTorch glue runs them). Rounding
follows the bfloat16 model step by step, but reductions (the norms' means, attention) sum in their
own order, so logits are close to (not bit-identical with) the model's PyTorch forward. What makes
speculative decoding exact still holds: every row's result depends on that row alone, so a verify
of n tokens or a token tree computes what one-token steps compute, bit for bit
(tests/engine/test_native_layers.py, tests/models/test_step_consistent_attention.py).

Example:
    >>> import decodelab as dl
    >>> from decodelab.engine.native_layers import NativeLayers
    >>> lm = dl.load("tiny-random", vocab_size=32, weights="fp32")
    >>> NativeLayers.of(lm.model) is None   # float32 weights: the PyTorch glue
    True
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import torch
from torch import nn

from . import native_int4
from .kv_cache import SlotLayer
from .quantized_linear import ACTIVATION_DTYPE, Int4Linear, Int8Linear

MAX_HEAD_DIM = 1024  # the C file's per-query buffers
_PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")


class PackedWeight(ctypes.Structure):
    _fields_ = [("tiles", ctypes.c_void_p), ("scales", ctypes.c_void_p), ("bias", ctypes.c_void_p),
                ("out_features", ctypes.c_int), ("in_features", ctypes.c_int), ("group", ctypes.c_int),
                ("doubled", ctypes.c_int)]


class LayerWeights(ctypes.Structure):
    _fields_ = [("input_norm", ctypes.c_void_p), ("post_norm", ctypes.c_void_p), ("eps", ctypes.c_float),
                ("hidden", ctypes.c_int), ("heads", ctypes.c_int), ("kv_heads", ctypes.c_int),
                ("head_dim", ctypes.c_int), ("intermediate", ctypes.c_int),
                *((name, PackedWeight) for name in _PROJECTIONS)]


def _packed(module: nn.Module) -> PackedWeight | None:
    if not isinstance(module, (Int4Linear, Int8Linear)) or not module.native:
        return None
    bias = module.bias
    if bias is not None and (bias.dtype != ACTIVATION_DTYPE or not bias.is_contiguous()):
        return None
    return PackedWeight(module.tiles.data_ptr(), module.tile_scales.data_ptr(),
                        0 if bias is None else bias.data_ptr(), module.out_features, module.in_features,
                        module.group_size, int(isinstance(module, Int8Linear)))


def _norm_weight(norm: nn.Module) -> torch.Tensor | None:
    weight = getattr(norm, "weight", None)
    ok = (weight is not None and weight.dtype == ACTIVATION_DTYPE and weight.is_contiguous()
          and hasattr(norm, "variance_epsilon") and type(norm).__name__.endswith("RMSNorm"))
    return weight if ok else None


def _layer_weights(layer: nn.Module, config: Any) -> LayerWeights | None:
    attention, mlp = layer.self_attn, layer.mlp
    modules = (attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj,
               mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    packed = [_packed(m) for m in modules]
    norms = [_norm_weight(layer.input_layernorm), _norm_weight(layer.post_attention_layernorm)]
    if any(p is None for p in packed) or any(n is None for n in norms):
        return None
    heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, attention.head_dim
    hidden, intermediate = modules[0].in_features, modules[4].out_features
    shapes_ok = (head_dim <= MAX_HEAD_DIM and heads % kv_heads == 0
                 and (modules[0].out_features, modules[1].out_features) == (heads * head_dim, kv_heads * head_dim)
                 and modules[2].out_features == kv_heads * head_dim and modules[3].in_features == heads * head_dim
                 and modules[3].out_features == hidden and modules[5].out_features == intermediate
                 and modules[6].in_features == intermediate and modules[6].out_features == hidden
                 and layer.input_layernorm.variance_epsilon == layer.post_attention_layernorm.variance_epsilon)
    if not shapes_ok:
        return None
    return LayerWeights(norms[0].data_ptr(), norms[1].data_ptr(), float(layer.input_layernorm.variance_epsilon),
                        hidden, heads, kv_heads, head_dim, intermediate, *packed)


class NativeLayers:
    """The C layers of one model (built once per model; None where they do not apply)."""

    def __init__(self, lib: ctypes.CDLL, layers: list[nn.Module], weights: list[LayerWeights]):
        self.lib, self.layers, self.weights = lib, layers, weights
        first = layers[0].self_attn
        self.heads, self.kv_heads = weights[0].heads, weights[0].kv_heads
        self.head_dim, self.hidden, self.scale = first.head_dim, weights[0].hidden, float(first.scaling)
        for name, restype, args in (
            ("layer_qkv", ctypes.c_int, [ctypes.c_void_p] * 2 + [ctypes.c_int] * 2 + [ctypes.c_void_p] * 7
             + [ctypes.c_int] * 3),
            ("layer_rest", ctypes.c_int, [ctypes.c_void_p] * 2 + [ctypes.c_int] * 2 + [ctypes.c_void_p] * 3
             + [ctypes.c_int] * 2 + [ctypes.c_void_p] * 3 + [ctypes.c_float, ctypes.c_int]),
        ):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, args

    @classmethod
    def of(cls, model: nn.Module) -> NativeLayers | None:
        config = model.config
        if os.environ.get("DECODELAB_NATIVE_LAYERS", "1").strip() == "0":  # PyTorch glue, for comparisons
            return None
        lib = native_int4.library()
        if lib is None or getattr(config, "hidden_act", None) not in ("silu", "swish"):
            return None
        layers = list(model.model.layers[: config.num_hidden_layers])
        weights = [_layer_weights(layer, config) for layer in layers]
        if any(w is None for w in weights):
            return None
        return cls(lib, layers, weights)

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: Any,
                visible: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Run every layer on hidden [B, n, H] (bfloat16) in place. `visible` says, per new token
        (row-major over [B, n]), which cache slots it sees once this forward's are appended: the
        first prefix[r] slots, then extra[extra_start[r]:extra_start[r + 1]] (`visible_slots`)."""
        batch, n = hidden.shape[:2]
        rows = batch * n
        x = hidden.reshape(rows, self.hidden).contiguous()
        cos, sin = cos.reshape(rows, -1).contiguous(), sin.reshape(rows, -1).contiguous()
        prefix, extra_start, extra = visible
        threads = torch.get_num_threads()
        q = torch.empty(rows, self.heads * self.head_dim, dtype=ACTIVATION_DTYPE)
        k = torch.empty(rows, self.kv_heads * self.head_dim, dtype=ACTIVATION_DTYPE)
        v = torch.empty_like(k)
        shape = (batch, n, self.kv_heads, self.head_dim)
        for index, layer in enumerate(self.layers):
            desc = ctypes.byref(self.weights[index])
            layer_idx = layer.self_attn.layer_idx
            slots = cache.layers[layer_idx] if layer_idx < len(cache.layers) else None
            slots = slots if isinstance(slots, SlotLayer) else None
            store: tuple = (None, None, 0, 0)  # no cache buffers: k and v go through `update` below
            if slots is not None:  # k and v go straight into the cache's buffers
                key_buffer, value_buffer, start = slots.reserve(batch, n, self.kv_heads, self.head_dim,
                                                                ACTIVATION_DTYPE, hidden.device)
                if key_buffer.dtype != ACTIVATION_DTYPE or value_buffer.dtype != ACTIVATION_DTYPE:
                    raise RuntimeError("the KV cache is not in bfloat16")
                keys, values, capacity = key_buffer, value_buffer, key_buffer.shape[2]
                store = (keys.data_ptr(), values.data_ptr(), capacity, start)
            _check(self.lib.layer_qkv(desc, x.data_ptr(), rows, n, cos.data_ptr(), sin.data_ptr(), q.data_ptr(),
                                      k.data_ptr(), v.data_ptr(), *store, threads), index)
            if slots is not None:
                slots.advance(n)
                used = start + n
            else:
                keys, values = cache.update(k.view(shape).transpose(1, 2), v.view(shape).transpose(1, 2), layer_idx)
                keys, values, capacity = _slot_strided(keys, values)
                used = keys.shape[2]
            _check(self.lib.layer_rest(desc, x.data_ptr(), rows, n, q.data_ptr(), keys.data_ptr(), values.data_ptr(),
                                       used, capacity, prefix.data_ptr(), extra_start.data_ptr(),
                                       extra.data_ptr(), self.scale, threads), index)
        return x.view(batch, n, self.hidden)


def _check(code: int, index: int) -> None:
    if code:
        raise RuntimeError(f"native layer {index} failed (code {code})")


def _slot_strided(keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Keys and values [B, heads, slots, dim] in bfloat16 as the C layer reads them -- each head's
    slots `capacity` apart, rows `heads * capacity` apart (a `SlotLayer`'s buffer views as they
    are; anything else made contiguous) -- and that capacity."""
    if keys.dtype != ACTIVATION_DTYPE or values.dtype != ACTIVATION_DTYPE:
        raise RuntimeError("the KV cache is not in bfloat16")
    heads, dim = keys.shape[1], keys.shape[3]
    stride = keys.stride()
    if values.stride() != stride or stride[3] != 1 or stride[2] != dim or stride[1] % dim \
            or stride[0] != heads * stride[1]:
        keys, values = keys.contiguous(), values.contiguous()
        stride = keys.stride()
    return keys, values, stride[1] // dim


def visible_slots(allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """allowed [R, S] (query r may see cache slot s) -> (prefix [R], extra_start [R + 1], extra)
    int32: query r sees slots 0..prefix[r]-1, then extra[extra_start[r]:extra_start[r + 1]], in
    cache order (what `NativeLayers.forward` takes)."""
    slots = allowed.shape[-1]
    prefix = allowed.to(torch.int32).cumprod(-1).sum(-1)
    rest = allowed & (torch.arange(slots, device=allowed.device) >= prefix[:, None])
    extra_start = torch.zeros(allowed.shape[0] + 1, dtype=torch.int64)
    extra_start[1:] = rest.sum(-1).cumsum(0)
    extra = rest.nonzero()[:, 1]
    return prefix.to(torch.int32), extra_start.to(torch.int32), extra.to(torch.int32)


__all__ = ["NativeLayers", "visible_slots"]
