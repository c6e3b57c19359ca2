"""Read the 4-bit codes of GGUF tensors directly, so int4 weights are re-encoded, not re-quantised.

GGUF block formats (ggml, Gerganov et al.; "k-quants", ggml PR #1684, 2023), all along a row:
- Q4_0: blocks of 32, f16 d, 16 bytes of nibbles (elements 0-15 low, 16-31 high): w = d (q - 8).
- Q4_1: blocks of 32, f16 d, f16 m, 16 bytes of nibbles: w = d q + m.
- Q4_K: super-blocks of 256 = 8 sub-blocks of 32; f16 d, f16 dmin, 12 bytes of 6-bit sub-block
  scales sc_j and mins m_j, 128 bytes of nibbles (bytes 32c..32c+31 hold sub-block 2c in their
  low nibbles and 2c+1 in their high ones): w = d sc_j q - dmin m_j.
Each maps exactly onto the CPU int4 kernel's form (q - 8) s + z with a group of 32:
s = d (or d sc_j), z = 8 s + m (Q4_1), 0 (Q4_0), 8 s - dmin m_j (Q4_K). The only loss is storing
s and z in bfloat16, which the kernel requires with bfloat16 activations (measured per type by
`reencoding_errors`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

INT4_TYPES = ("Q4_0", "Q4_1", "Q4_K")
GROUP = 32


def int4_codes(type_name: str, data: np.ndarray, rows: int, cols: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes [N, K] uint8 0..15, scales [N, K/32] f32, zeros [N, K/32] f32) for a Q4 tensor."""
    raw = np.ascontiguousarray(data).reshape(-1)
    if type_name == "Q4_K":
        blocks = raw.reshape(-1, 144)
        d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
        dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
        sc, mn = _k_scale_min(blocks[:, 4:16])
        nib = blocks[:, 16:144].reshape(-1, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
        codes = (nib & 0x0F).reshape(-1, 8, 32)
        scale = d * sc.astype(np.float32)  # [blocks, 8]
        zero = 8 * scale - dmin * mn.astype(np.float32)
    else:
        width = 20 if type_name == "Q4_1" else 18
        blocks = raw.reshape(-1, width)
        d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
        if type_name == "Q4_1":
            m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
            nibbles = blocks[:, 4:20]
        else:
            m = None
            nibbles = blocks[:, 2:18]
        codes = np.concatenate([nibbles & 0x0F, nibbles >> 4], -1)  # [blocks, 32]
        scale = d
        zero = 8 * d + m if m is not None else np.zeros_like(d)
    codes_t = torch.from_numpy(np.ascontiguousarray(codes)).reshape(rows, cols)
    scale_t = torch.from_numpy(np.ascontiguousarray(scale)).reshape(rows, cols // GROUP)
    zero_t = torch.from_numpy(np.ascontiguousarray(zero)).reshape(rows, cols // GROUP)
    return codes_t, scale_t, zero_t


def _k_scale_min(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 six-bit scales and mins packed in 12 bytes (ggml's get_scale_min_k4)."""
    s = scales.reshape(-1, 3, 4)
    a, b, c = s[:, 0], s[:, 1], s[:, 2]
    sc = np.concatenate([a & 0x3F, (c & 0x0F) | ((a >> 2) & 0x30)], -1)
    mn = np.concatenate([b & 0x3F, (c >> 4) | ((b >> 2) & 0x30)], -1)
    return sc, mn


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """(q - 8) s + z per group of 32, in float32."""
    s = scale.float().repeat_interleave(GROUP, -1)
    z = zero.float().repeat_interleave(GROUP, -1)
    return (codes.float() - 8) * s + z


def llama_row_order(rows: int, heads: int) -> torch.Tensor:
    """GGUF row for each Hugging Face row of a llama q/k projection (llama.cpp's converter
    interleaves the two RoPE halves of every head; this undoes it)."""
    dim = rows // heads // 2
    return torch.arange(rows).reshape(heads, dim, 2).transpose(1, 2).reshape(rows)


class GGUFTensors:
    """The tensors of one GGUF file by name, with its architecture and head counts."""

    def __init__(self, path: Path):
        import gguf

        self.reader = gguf.GGUFReader(str(path))
        self.tensors = {t.name: t for t in self.reader.tensors}
        self.arch = _field(self.reader, "general.architecture") or ""
        self.heads = _field(self.reader, f"{self.arch}.attention.head_count")
        self.kv_heads = _field(self.reader, f"{self.arch}.attention.head_count_kv") or self.heads

    def type_name(self, name: str) -> str:
        return self.tensors[name].tensor_type.name

    def int4(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Codes, scales and zeros of a Q4 tensor, rows in Hugging Face order."""
        tensor = self.tensors[name]
        cols, rows = (int(x) for x in tensor.shape[:2])
        codes, scale, zero = int4_codes(tensor.tensor_type.name, tensor.data, rows, cols)
        order = self.row_order(name, rows)
        if order is not None:
            codes, scale, zero = codes[order], scale[order], zero[order]
        return codes, scale, zero

    def dequantized(self, name: str) -> torch.Tensor:
        """The GGUF's own dequantisation (gguf.quants), rows in Hugging Face order."""
        import gguf

        tensor = self.tensors[name]
        cols, rows = (int(x) for x in tensor.shape[:2])
        values = torch.from_numpy(np.ascontiguousarray(
            gguf.quants.dequantize(tensor.data, tensor.tensor_type))).float().reshape(rows, cols)
        order = self.row_order(name, rows)
        return values if order is None else values[order]

    def row_order(self, name: str, rows: int) -> torch.Tensor | None:
        if self.arch != "llama" or not self.heads:
            return None
        if ".attn_q." in name:
            return llama_row_order(rows, int(self.heads))
        if ".attn_k." in name:
            return llama_row_order(rows, int(self.kv_heads))
        return None


def _field(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        return None
    value = field.parts[field.data[0]]
    if value.dtype == np.uint8:
        return bytes(value).decode()
    return int(value[0])


# GGUF tensor name -> Hugging Face module path ("{i}" is the layer index)
MODULE_NAMES = {
    "token_embd": "model.embed_tokens",
    "output": "lm_head",
    "attn_q": "model.layers.{i}.self_attn.q_proj",
    "attn_k": "model.layers.{i}.self_attn.k_proj",
    "attn_v": "model.layers.{i}.self_attn.v_proj",
    "attn_output": "model.layers.{i}.self_attn.o_proj",
    "ffn_gate": "model.layers.{i}.mlp.gate_proj",
    "ffn_up": "model.layers.{i}.mlp.up_proj",
    "ffn_down": "model.layers.{i}.mlp.down_proj",
}


def module_name(gguf_name: str) -> str | None:
    parts = gguf_name.split(".")
    if parts[-1] != "weight":
        return None
    if parts[0] == "blk" and len(parts) == 4 and parts[2] in MODULE_NAMES:
        return MODULE_NAMES[parts[2]].format(i=parts[1])
    if len(parts) == 2 and parts[0] in ("token_embd", "output"):
        return MODULE_NAMES[parts[0]]
    return None
