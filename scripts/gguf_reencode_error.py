"""How far decodelab's re-encoded weights are from a GGUF file's own dequantized values.

For every weight tensor of the file, per GGUF tensor type: the values our int4/int8 layers
multiply by (Q4_* re-encoded from the file's codes with bfloat16 scales/zeros; other types
re-quantized to int8 per channel, as `weights="auto"` does; and everything at `weights="int8"`)
against `gguf.quants.dequantize`. Reports max |error|, max |error| / max |w| and the relative RMS
error ||error|| / ||w|| over all tensors of the type.

Usage: python scripts/gguf_reencode_error.py smollm2-135m qwen2.5-coder-1.5b
"""

from __future__ import annotations

import sys
from collections import defaultdict

import torch

from decodelab.engine.quantized_linear import quantize_int8
from decodelab.models import gguf_cache
from decodelab.models.gguf_codes import INT4_TYPES, GGUFTensors, dequantize, module_name
from decodelab.models.registry import find_pack


def bf16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).float()


def int8_values(w: torch.Tensor) -> torch.Tensor:
    codes, scale = quantize_int8(w)
    return codes.float() * bf16(scale)[:, None]


def main(names: list[str]) -> None:
    print("| model | GGUF type | tensors | weights | encoding | max abs error | max abs error / max abs w | rel. RMS error |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        pack = find_pack(name)
        source = GGUFTensors(gguf_cache.joined(pack.part_paths()))
        stats = defaultdict(lambda: [0, 0, 0.0, 0.0, 0.0, 0.0])  # count, numel, max err, max w, sum err^2, sum w^2
        for tensor_name in source.tensors:
            if module_name(tensor_name) is None:
                continue
            type_name = source.type_name(tensor_name)
            ref = source.dequantized(tensor_name)
            variants = {}
            if type_name in INT4_TYPES:
                codes, scale, zero = source.int4(tensor_name)
                variants["auto: int4 from codes"] = dequantize(codes, bf16(scale), bf16(zero))
            elif type_name not in ("F32", "F16", "BF16"):
                variants["auto: int8 per channel"] = int8_values(ref)
            variants["int8: int8 per channel"] = int8_values(ref)
            for label, got in variants.items():
                s = stats[(type_name, label)]
                err = (got - ref).abs()
                s[0] += 1
                s[1] += ref.numel()
                s[2] = max(s[2], float(err.max()))
                s[3] = max(s[3], float(ref.abs().max()))
                s[4] += float((err.double() ** 2).sum())
                s[5] += float((ref.double() ** 2).sum())
        for (type_name, label), (count, numel, max_err, max_w, sq_err, sq_w) in sorted(stats.items()):
            weights, encoding = label.split(": ")
            print(f"| {pack.name} | {type_name} | {count} ({numel / 1e6:.0f}M) | {weights} | {encoding} | "
                  f"{max_err:.2e} | {max_err / max_w:.2e} | {(sq_err / sq_w) ** 0.5:.2e} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["smollm2-135m"])
