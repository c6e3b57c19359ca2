"""Quantized linear layers: codes reproduce the weight within the quantization step, and the
packed kernels compute the dequantized float32 matmul (up to bfloat16 activation rounding)."""

from __future__ import annotations

import pytest
import torch

from decodelab.engine.quantized_linear import (
    Int4Linear,
    Int8Linear,
    QuantizedEmbedding,
    int4_shape_ok,
    quantize_int4,
    quantize_int8,
)


def _weight(n=64, k=128, seed=0):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.05


@pytest.mark.parametrize("group", [32, 64, 128])
def test_int4_quantize_dequantize_error_is_within_half_a_step(group):
    w = _weight()
    codes, scale, zero = quantize_int4(w, group)
    assert codes.max() <= 15
    step = scale.repeat_interleave(group, -1)
    restored = (codes.float() - 8) * step + zero.repeat_interleave(group, -1)
    assert ((restored - w).abs() <= step / 2 + 1e-6).all()


def test_int8_quantize_dequantize_error_is_within_half_a_step():
    w = _weight()
    codes, scale = quantize_int8(w)
    restored = codes.float() * scale[:, None]
    assert ((restored - w).abs() <= scale[:, None] / 2 + 1e-7).all()


def _relative_error(out, ref):
    return float((out.float() - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("rows", [1, 3, 8, 17])
def test_int4_linear_equals_dequantized_float32_matmul(rows):
    w, bias = _weight(), torch.randn(64) * 0.1
    layer = Int4Linear(*quantize_int4(w, 32), 32, bias)
    x = torch.randn(rows, 128)
    ref = x @ layer.dequantize().T + bias.to(torch.bfloat16).float()
    assert _relative_error(layer(x), ref) < 2e-2
    # the dequantized weight is the quantized one, scales and zeros rounded to bfloat16
    _, scale, zero = quantize_int4(w, 32)
    bound = (0.5 * scale + (8 * scale + zero.abs()) / 128).repeat_interleave(32, -1)
    assert ((layer.dequantize() - w).abs() <= bound).all()


@pytest.mark.parametrize("rows", [1, 4, 16])
def test_int8_linear_equals_dequantized_float32_matmul(rows):
    w = _weight()
    layer = Int8Linear(*quantize_int8(w))
    x = torch.randn(2, rows, 128)
    ref = x @ layer.dequantize().T
    out = layer(x)
    assert out.shape == (2, rows, 64) and out.dtype == torch.bfloat16
    assert _relative_error(out, ref) < 2e-2


def test_quantized_embedding_gathers_the_dequantized_rows():
    w = _weight(n=48, k=64)
    for table in (Int4Linear(*quantize_int4(w, 32), 32, keep_rows=True), Int8Linear(*quantize_int8(w))):
        embedding = QuantizedEmbedding(table)
        ids = torch.tensor([[3, 0, 47], [5, 5, 1]])
        out = embedding(ids)
        assert out.shape == (2, 3, 64)
        torch.testing.assert_close(out, table.dequantize()[ids].to(torch.bfloat16), rtol=0, atol=0)


def test_int4_kernel_shape_limits_are_checked():
    assert int4_shape_ok(64, 128, 32)
    assert not int4_shape_ok(10, 128, 32)  # output size must be a multiple of 16
    assert not int4_shape_ok(64, 48, 32)   # input size must be a multiple of the group
    assert not int4_shape_ok(64, 128, 16)  # the kernel takes groups of 32..256
    with pytest.raises(ValueError, match="int4 kernel"):
        Int4Linear(*quantize_int4(_weight(n=10), 32), 32)
