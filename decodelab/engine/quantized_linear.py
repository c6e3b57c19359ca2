"""Weight-only quantized linear and embedding layers that call PyTorch's packed CPU kernels.

Technique: weight-only quantization with group-wise affine 4-bit codes (as in GPTQ/AWQ-style
"w4a16" inference, Frantar et al. 2022, "GPTQ"; Lin et al. 2023, "AWQ") and per-channel
symmetric 8-bit codes ("LLM.int8()"-style weight-only, Dettmers et al. 2022), with bfloat16
activations. Plain decoding reads every weight once per token, so reading 4 or 8 bits per weight
instead of 32 is what makes it faster on a memory-bound CPU.

Kernels (torch 2.13, CPU):
- int4: `aten._weight_int4pack_mm_for_cpu(x_bf16, packed, group_size, scales_and_zeros)` with
  `packed = aten._convert_weight_to_int4pack_for_cpu(codes[N, K] int32, 1)`; the dequantised
  weight is `(q - 8) * scale + zero` per group of `group_size` (32, 64, 128 or 256) input
  columns; N must be a multiple of 16. scales_and_zeros [K/g, N, 2] must be in the activation
  dtype (bfloat16).
- int8: `aten._weight_int8pack_mm(x_bf16, codes[N, K] int8, scales[N] bf16)`.
Both unpack the weight tile once for all rows they multiply: no per-call dequantisation. With
float32 activations the same kernels are 10-30x slower, hence bfloat16.

The embedding gathers the rows it needs and dequantises only those.
"""

from __future__ import annotations

import torch
from torch import nn

from . import native_int4

INT4_GROUP_SIZES = (32, 64, 128, 256)
ACTIVATION_DTYPE = torch.bfloat16


def int4_shape_ok(out_features: int, in_features: int, group_size: int) -> bool:
    """Whether the CPU int4 kernel accepts a weight of this shape and group size."""
    return group_size in INT4_GROUP_SIZES and out_features % 16 == 0 and in_features % group_size == 0


CHUNK_ROWS = 4096  # quantize in row chunks: float temporaries stay small for 100k-row heads


def quantize_int4(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric min/max 4-bit codes per group: returns (codes [N, K] uint8 in 0..15,
    scales [N, K/g], zeros [N, K/g]) with weight ~ (codes - 8) * scale + zero."""
    n, k = weight.shape
    codes = torch.empty(n, k, dtype=torch.uint8)
    scales = torch.empty(n, k // group_size)
    zeros = torch.empty(n, k // group_size)
    for start in range(0, n, CHUNK_ROWS):
        rows = slice(start, min(start + CHUNK_ROWS, n))
        groups = weight[rows].float().reshape(-1, k // group_size, group_size)
        low = groups.amin(-1)
        scale = ((groups.amax(-1) - low) / 15).clamp_min(1e-12)
        codes[rows] = ((groups - low[..., None]) / scale[..., None]).round().clamp(0, 15).reshape(-1, k).to(torch.uint8)
        scales[rows] = scale
        zeros[rows] = low + 8 * scale
    return codes, scales, zeros


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel 8-bit codes: returns (codes [N, K] int8, scales [N])."""
    n, k = weight.shape
    codes = torch.empty(n, k, dtype=torch.int8)
    scales = torch.empty(n)
    for start in range(0, n, CHUNK_ROWS):
        rows = slice(start, min(start + CHUNK_ROWS, n))
        chunk = weight[rows].float()
        scale = (chunk.abs().amax(-1) / 127).clamp_min(1e-12)
        codes[rows] = (chunk / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
        scales[rows] = scale
    return codes, scales


class _PackedLinear(nn.Module):
    """What the packed layers share: `weight` reads as the dequantised float32 matrix."""

    def dequantize(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised weight (float32, computed on each access; for code that reads it)."""
        return self.dequantize()


class Int4Linear(_PackedLinear):
    """y = x W^T + b with W held as 4-bit group-wise codes (see module docstring).

    On CPUs with AVX-512 BF16 the codes are held in the layout of decodelab's own kernel
    (`native_int4`), which also serves embedding rows; elsewhere in PyTorch's packed layout.
    """

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int,
                 bias: torch.Tensor | None = None, *, keep_rows: bool = False):
        super().__init__()
        n, k = codes.shape
        if not int4_shape_ok(n, k, group_size):
            raise ValueError(f"the int4 kernel cannot take a {n}x{k} weight with group size {group_size}")
        self.in_features, self.out_features, self.group_size = k, n, group_size
        self.register_buffer("bias", None if bias is None else bias.detach().to(ACTIVATION_DTYPE))
        self.native = native_int4.available()
        if self.native:
            tiles, tile_scales = native_int4.pack_tiles(codes, scales, zeros, group_size)
            self.register_buffer("tiles", tiles)
            self.register_buffer("tile_scales", tile_scales)
            return
        codes = codes.to(torch.int32).contiguous()
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1))
        sz = torch.stack([scales.float(), zeros.float()], -1).transpose(0, 1).contiguous()  # [K/g, N, 2]
        self.register_buffer("scales_and_zeros", sz.to(ACTIVATION_DTYPE))
        # Rows in our own nibble layout, for gathering embedding rows without the kernel.
        self.register_buffer("row_nibbles", _pack_nibbles(codes) if keep_rows else None)

    @property
    def keeps_rows(self) -> bool:
        """Whether `dequantize_rows` can gather rows (always with the native layout)."""
        return self.native or self.row_nibbles is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(ACTIVATION_DTYPE).contiguous()
        if self.native:
            out = native_int4.int4_matmul(flat, self.tiles, self.tile_scales, self.group_size)
        else:
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, self.group_size, self.scales_and_zeros)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def dequantize_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Float rows of W for the given row indices (bfloat16)."""
        if self.native:
            codes = native_int4.gather_row_codes(self.tiles, rows, self.out_features)
            sz = self.tile_scales[rows // native_int4.TILE_ROWS, :, :, rows % native_int4.TILE_ROWS].float()  # [R, K/g, 2]
            scale, zero = sz[..., 0], sz[..., 1]
        elif self.row_nibbles is not None:
            codes = _unpack_nibbles(self.row_nibbles[rows])
            sz = self.scales_and_zeros[:, rows].float()  # [K/g, R, 2]
            scale, zero = sz[..., 0].transpose(0, 1), sz[..., 1].transpose(0, 1)
        else:
            raise RuntimeError("this Int4Linear keeps no row codes; build it with keep_rows=True")
        return _group_affine(codes, scale, zero, self.group_size).to(ACTIVATION_DTYPE)

    def dequantize(self) -> torch.Tensor:
        """The float32 weight this layer multiplies by (for tests and error reports)."""
        if self.native:
            return _group_affine(*native_int4.unpack_tiles(self.tiles, self.tile_scales), self.group_size)
        # float32 identity rows: the kernel's float32 path is exact here (one term per output)
        eye = torch.eye(self.in_features, dtype=torch.float32)
        w_t = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.packed, self.group_size,
                                                         self.scales_and_zeros.float())
        return w_t.T.contiguous()

    def extra_repr(self) -> str:
        kernel = "decodelab" if self.native else "torch"
        return f"in={self.in_features}, out={self.out_features}, int4 group={self.group_size}, {kernel} kernel"


def _group_affine(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int) -> torch.Tensor:
    """The int4 weights' float32 values, (q - 8) * scale + zero, with one scale and zero per group
    of input columns ([..., K] codes, [..., K/g] scales and zeros)."""
    return (codes.float() - 8) * scale.float().repeat_interleave(group_size, -1) + zero.float().repeat_interleave(
        group_size, -1)


class Int8Linear(_PackedLinear):
    """y = x W^T + b with W held as per-channel symmetric 8-bit codes.

    With decodelab's int4 kernel (`native_int4`), an 8-bit code c is held as two 4-bit codes of
    one int4 weight twice as wide, c + 128 = 16 h + l: W x = [W_h | W_l] [x; x] with W_h's scale
    16 s and W_l's zero 8 s, so one kernel call with float32 accumulation computes it exactly as
    the 8-bit weight (same bytes per weight, a faster kernel than PyTorch's int8 one here).
    """

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = codes.shape
        self.register_buffer("bias", None if bias is None else bias.detach().to(ACTIVATION_DTYPE))
        scales = scales.float().to(ACTIVATION_DTYPE)
        self.native = native_int4.available() and native_int4.int8_shape_ok(*codes.shape)
        if self.native:
            self.group_size = native_int4.int8_group_size(self.in_features)
            tiles, tile_scales = native_int4.pack_tiles(*native_int4.split_int8(codes, scales, self.group_size),
                                                        self.group_size)
            self.register_buffer("tiles", tiles)
            self.register_buffer("tile_scales", tile_scales)
            self.register_buffer("scales", scales.contiguous())
            return
        self.register_buffer("codes", codes.to(torch.int8).contiguous())
        self.register_buffer("scales", scales.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(ACTIVATION_DTYPE).contiguous()
        if self.native:
            out = native_int4.int4_matmul(torch.cat([flat, flat], -1), self.tiles, self.tile_scales, self.group_size)
        else:
            out = torch.ops.aten._weight_int8pack_mm(flat, self.codes, self.scales)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def _codes_of(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        if not self.native:
            return self.codes if rows is None else self.codes[rows]
        if rows is None:
            wide = native_int4.unpack_tiles(self.tiles, self.tile_scales)[0]
        else:
            wide = native_int4.gather_row_codes(self.tiles, rows, self.out_features)
        return native_int4.join_int8(wide)

    def dequantize_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return (self._codes_of(rows).float() * self.scales[rows, None].float()).to(ACTIVATION_DTYPE)

    def dequantize(self) -> torch.Tensor:
        return self._codes_of().float() * self.scales.float()[:, None]

    def extra_repr(self) -> str:
        kernel = "decodelab int4x2" if self.native else "torch"
        return f"in={self.in_features}, out={self.out_features}, int8 per-channel, {kernel} kernel"


def int4_kernel_of(model: nn.Module) -> str:
    """"decodelab" or "torch" for the kernel the model's int4 layers use; "none" without any."""
    for module in model.modules():
        if isinstance(module, Int4Linear):
            return "decodelab" if module.native else "torch"
    for module in model.modules():
        if isinstance(module, Int8Linear) and module.native:
            return "decodelab"
    return "none"


class QuantizedEmbedding(nn.Module):
    """An embedding over the rows of an Int4Linear/Int8Linear: gathers the looked-up rows and
    dequantises only those (bfloat16 out). May share its table with the tied LM head."""

    def __init__(self, table: Int4Linear | Int8Linear):
        super().__init__()
        self.table = table
        self.num_embeddings, self.embedding_dim = table.out_features, table.in_features

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.table.dequantize_rows(ids.reshape(-1))
        return rows.reshape(*ids.shape, self.embedding_dim)

    @property
    def weight(self) -> torch.Tensor:
        return self.table.dequantize()

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, {type(self.table).__name__}"


def _pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """[N, K] codes 0..15 -> [N, K/2] uint8, even columns in the low nibble."""
    codes = codes.to(torch.uint8)
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def _unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    low = packed & 0x0F
    high = packed >> 4
    return torch.stack([low, high], -1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)
