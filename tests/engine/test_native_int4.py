"""decodelab's own int4 kernel (engine/int4_avx512.c): layout, accuracy, row independence, fallback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from decodelab.engine import native_int4
from decodelab.engine.quantized_linear import Int4Linear, quantize_int4

needs_kernel = pytest.mark.skipif(not native_int4.available(), reason=native_int4.status())


def _quantized(n: int, k: int, group: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(n, k, generator=gen) * 0.05
    codes, scales, zeros = quantize_int4(weight, group)
    # the kernel holds scales and zeros in bfloat16: compare against exactly those
    return codes, scales.bfloat16().float(), zeros.bfloat16().float()


def _dequantized(codes, scales, zeros, group):
    return (codes.double() - 8) * scales.double().repeat_interleave(group, -1) + zeros.double().repeat_interleave(group, -1)


def _close_to_reference(out: torch.Tensor, reference: torch.Tensor) -> bool:
    # the output is rounded to bfloat16 (8 significant bits): allow that and a little accumulation error
    err = (out.double() - reference).abs()
    return bool((err <= reference.abs() / 128 + 1e-3 * reference.abs().max()).all())


@pytest.mark.parametrize("n", [48, 64, 80, 144])  # tiles in groups of 4: a short last group, none, 1, 1
def test_tile_layout_round_trips(n):
    codes, scales, zeros = _quantized(n, 96, 32)
    tiles, tile_scales = native_int4.pack_tiles(codes, scales, zeros, 32)
    assert tiles.shape == (n * 96 // 2,) and tile_scales.shape == (n // 16, 3, 2, 16)
    back_codes, back_scales, back_zeros = native_int4.unpack_tiles(tiles, tile_scales)
    assert torch.equal(back_codes, codes) and torch.equal(back_scales, scales) and torch.equal(back_zeros, zeros)
    rows = torch.tensor([0, 17, n - 1, 5, n - 16])
    assert torch.equal(native_int4.gather_row_codes(tiles, rows, n), codes[rows])


@needs_kernel
def test_mismatched_width_is_an_error_not_a_wild_read():
    codes, scales, zeros = _quantized(32, 64, 32)
    tiles, tile_scales = native_int4.pack_tiles(codes, scales, zeros, 32)
    with pytest.raises(ValueError, match="columns"):
        native_int4.int4_matmul(torch.zeros(1, 128, dtype=torch.bfloat16), tiles, tile_scales, 32)


@needs_kernel
@pytest.mark.parametrize("n,k,group", [(48, 64, 32), (256, 384, 128), (32, 512, 64), (16, 256, 256), (80, 96, 32)])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 9])
def test_matmul_matches_the_dequantized_weight(n, k, group, rows):
    codes, scales, zeros = _quantized(n, k, group, seed=rows)
    tiles, tile_scales = native_int4.pack_tiles(codes, scales, zeros, group)
    x = torch.randn(rows, k, generator=torch.Generator().manual_seed(7)).bfloat16()
    out = native_int4.int4_matmul(x, tiles, tile_scales, group)
    assert out.dtype == torch.bfloat16 and out.shape == (rows, n)
    assert _close_to_reference(out, x.double() @ _dequantized(codes, scales, zeros, group).T)


@needs_kernel
def test_accuracy_check_catches_a_wrong_layout():
    """Negative control: codes packed with two columns swapped must fail the same comparison."""
    codes, scales, zeros = _quantized(64, 128, 32)
    swapped = codes.clone()
    swapped[:, [0, 1]] = codes[:, [1, 0]]
    tiles, tile_scales = native_int4.pack_tiles(swapped, scales, zeros, 32)
    x = torch.randn(2, 128, generator=torch.Generator().manual_seed(3)).bfloat16()
    out = native_int4.int4_matmul(x, tiles, tile_scales, 32)
    assert not _close_to_reference(out, x.double() @ _dequantized(codes, scales, zeros, 32).T)


@needs_kernel
def test_each_row_is_computed_as_if_alone_and_threads_do_not_matter():
    """What makes speculative verification equal plain decoding: row m of an M-row product is
    bit-identical to the one-row product, for every M and thread count."""
    codes, scales, zeros = _quantized(160, 256, 32)
    tiles, tile_scales = native_int4.pack_tiles(codes, scales, zeros, 32)
    x = torch.randn(11, 256, generator=torch.Generator().manual_seed(1)).bfloat16()
    alone = torch.cat([native_int4.int4_matmul(x[i : i + 1], tiles, tile_scales, 32) for i in range(11)])
    for rows in (2, 3, 4, 5, 8, 11):
        assert torch.equal(native_int4.int4_matmul(x[:rows], tiles, tile_scales, 32), alone[:rows])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = native_int4.int4_matmul(x, tiles, tile_scales, 32)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, alone)


@needs_kernel
def test_int4_linear_uses_the_kernel_and_serves_rows():
    codes, scales, zeros = _quantized(64, 96, 32)
    bias = torch.randn(64, generator=torch.Generator().manual_seed(4))
    layer = Int4Linear(codes, scales, zeros, 32, bias)
    assert layer.native and layer.keeps_rows
    weight = _dequantized(codes, scales, zeros, 32)
    assert torch.allclose(layer.dequantize().double(), weight, atol=1e-6)
    rows = torch.tensor([3, 63, 0])
    assert torch.allclose(layer.dequantize_rows(rows).double(), weight[rows], rtol=1 / 128, atol=1e-4)
    x = torch.randn(2, 3, 96, generator=torch.Generator().manual_seed(2)).bfloat16()
    product = x.double() @ weight.T
    out = layer(x)
    assert out.shape == (2, 3, 64)
    # two bfloat16 roundings (the product, then the sum with the bias): bound by both magnitudes
    err = (out.double() - (product + bias.bfloat16().double())).abs()
    assert bool((err <= (product.abs() + bias.abs().double()) / 128 + 1e-3 * product.abs().max()).all())


def _kernel_status_in_child(env: dict[str, str]) -> str:
    code = ("from decodelab.engine import native_int4\n"
            "from decodelab.engine.quantized_linear import Int4Linear, quantize_int4\n"
            "import torch\n"
            "layer = Int4Linear(*quantize_int4(torch.randn(16, 32), 32), 32)\n"
            "print(layer.native, '|', native_int4.status())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_environment_switch_selects_pytorchs_kernel():
    out = _kernel_status_in_child({"DECODELAB_INT4_KERNEL": "torch"})
    assert out.startswith("False |") and "DECODELAB_INT4_KERNEL=torch" in out


@needs_kernel
def test_missing_compiler_falls_back_with_a_reason(tmp_path):
    out = _kernel_status_in_child({"CC": str(tmp_path / "no-such-cc"), "PATH": str(tmp_path),
                                   "DECODELAB_CACHE": str(tmp_path / "cache")})
    assert out.startswith("False |") and "no C compiler" in out


def test_int8_codes_split_into_two_int4_halves_and_back():
    codes = torch.randint(-127, 128, (32, 64), dtype=torch.int8)
    scales = torch.rand(32).bfloat16().float() + 0.01
    wide, half_scales, half_zeros = native_int4.split_int8(codes, scales, 32)
    assert wide.shape == (32, 128) and int(wide.max()) <= 15
    assert torch.equal(native_int4.join_int8(wide), codes)
    # the two halves' dequantized weights add up to the 8-bit weight, over [x; x]
    halves = _dequantized(wide, half_scales, half_zeros, 32)
    assert torch.allclose(halves[:, :64] + halves[:, 64:], codes.double() * scales.double()[:, None], atol=1e-9)


@needs_kernel
def test_int8_linear_runs_on_the_kernel_with_the_same_weights():
    from decodelab.engine.quantized_linear import Int8Linear, quantize_int8

    weight = torch.randn(48, 96, generator=torch.Generator().manual_seed(5)) * 0.05
    codes, scales = quantize_int8(weight)
    layer = Int8Linear(codes, scales)
    assert layer.native
    exact = codes.double() * scales.bfloat16().double()[:, None]
    assert torch.allclose(layer.dequantize().double(), exact, atol=1e-7)
    rows = torch.tensor([47, 0, 16])
    assert torch.equal(layer.dequantize_rows(rows), (exact[rows]).bfloat16())
    x = torch.randn(5, 96, generator=torch.Generator().manual_seed(6)).bfloat16()
    out = layer(x)
    assert _close_to_reference(out, x.double() @ exact.T)
    assert torch.equal(torch.cat([layer(x[i : i + 1]) for i in range(5)]), out)
