"""Weight precision of a loaded model: `weights="auto" | "int4" | "int8" | "bf16" | "fp32"`.

Weight-only quantization (see `engine.quantized_linear`): every projection, the LM head and the
embedding become int4 (group-wise affine) or int8 (per-channel symmetric) layers with bfloat16
activations; "bf16" casts the weights; "fp32" leaves the model as loaded. "auto" is the GGUF
file's own precision (Q4_0/Q4_1/Q4_K -> int4 with their 32-element groups, re-encoded from the
file's codes; Q5/Q6_K/Q8_0 -> int8 per channel; float tensors -> bf16) and fp32 for models
without a GGUF file. Logits are always returned in float32, so samplers compute in float32.

Fallback: a weight whose shape the int4 kernel cannot take (output size not a multiple of 16,
or input size not a multiple of the group) is stored as int8 instead; the load report says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..engine import native_int4
from ..engine.quantized_linear import (
    Int4Linear,
    Int8Linear,
    QuantizedEmbedding,
    int4_kernel_of,
    int4_shape_ok,
    quantize_int4,
    quantize_int8,
)
from ..errors import InvalidOption

WEIGHTS = ("auto", "int4", "int8", "bf16", "fp32")
ACTIVATIONS = {"int4": torch.bfloat16, "int8": torch.bfloat16, "bf16": torch.bfloat16, "fp32": torch.float32}


def check_weights(weights: str | None) -> str:
    value = "auto" if weights is None else str(weights).strip().lower()
    if value not in WEIGHTS:
        raise InvalidOption(f"weights must be one of {', '.join(WEIGHTS)}; got {weights!r}")
    return value


@dataclass
class WeightsReport:
    """How each weight was stored: module -> (source type, encoding, note)."""

    weights: str
    rows: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    int4_kernel: str = ""  # which kernel the int4 layers call, and why (empty without int4 layers)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, encoding, _ in self.rows.values():
            out[encoding] = out.get(encoding, 0) + 1
        return out

    def notes(self) -> list[str]:
        return [f"{name}: {note}" for name, (_, _, note) in self.rows.items() if "stored as" in note]

    def summary(self) -> str:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(self.counts().items()))
        notes = self.notes()
        kernel = f"; int4 kernel: {self.int4_kernel}" if self.int4_kernel else ""
        return (f"weights={self.weights}: {counts}" + (f"; {len(notes)} fallbacks: {notes[0]} ..." if notes else "")
                + kernel)


def default_group_size(in_features: int) -> int:
    for group in (128, 64, 32):
        if in_features % group == 0:
            return group
    return 32


def apply_weights(model: nn.Module, weights: str, gguf_path: Path | None = None) -> WeightsReport:
    """Re-encode `model`'s linear and embedding weights in place (see module docstring)."""
    weights = check_weights(weights)
    if weights == "auto":
        weights_mode = "auto" if gguf_path is not None else "fp32"
    else:
        weights_mode = weights
    report = WeightsReport(weights_mode)
    if weights_mode == "fp32":
        return report
    source = None
    if gguf_path is not None and weights_mode in ("auto", "int4"):
        from .gguf_codes import GGUFTensors, module_name

        source = GGUFTensors(gguf_path)
        by_module = {module_name(n): n for n in source.tensors if module_name(n)}
    else:
        by_module = {}
    embed = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is not None and isinstance(embed, nn.Embedding) and head.weight is embed.weight
    names = {module: name for name, module in model.named_modules()}
    targets = [(names[m], m) for m in model.modules() if type(m) is nn.Linear]
    if isinstance(embed, nn.Embedding) and not tied:
        targets.append((names[embed], embed))

    for name, module in targets:
        gguf_name = by_module.get(name)
        if gguf_name is None and tied and module is head:
            gguf_name = by_module.get(names[embed])
        source_type = source.type_name(gguf_name) if gguf_name else "float"
        is_embedding = isinstance(module, nn.Embedding)
        bias = None if is_embedding else module.bias
        new, encoding, note = _encode(module.weight.detach(), bias, weights_mode, source, gguf_name, source_type,
                                      keep_rows=is_embedding or (tied and module is head))
        report.rows[name] = (source_type, encoding, note)
        if new is None:
            continue
        if is_embedding:
            new = QuantizedEmbedding(new)
        _set_module(model, name, new)
        if tied and module is head:
            _set_module(model, names[embed], QuantizedEmbedding(new))
            report.rows[names[embed]] = (source_type, encoding, "tied to lm_head")
    for param in model.parameters():  # norms, remaining float weights
        if param.is_floating_point() and param.dtype != torch.bfloat16:
            param.data = param.data.to(torch.bfloat16)
    if "int4" in report.counts():
        report.int4_kernel = _kernel_description(int4_kernel_of(model))
    model.get_output_embeddings().register_forward_hook(_float32_logits)
    model._decodelab_dtype = torch.bfloat16
    return report


def _encode(weight: torch.Tensor, bias, mode: str, source, gguf_name: str | None, source_type: str, *,
            keep_rows: bool) -> tuple[nn.Module | None, str, str]:
    """The replacement module for one weight, its encoding name and a fallback note."""
    from .gguf_codes import GROUP, INT4_TYPES, dequantize

    n, k = weight.shape
    if mode == "auto":
        if source_type in INT4_TYPES:
            target = "int4"
        elif source_type in ("F32", "F16", "BF16", "float"):
            target = "bf16"
        else:
            target = "int8"
    else:
        target = mode
    note = ""
    if target == "int4":
        from_codes = source is not None and source_type in INT4_TYPES
        group = GROUP if source is not None else default_group_size(k)
        if int4_shape_ok(n, k, group):
            if from_codes:
                codes, scale, zero = source.int4(gguf_name)
                check = dequantize(codes[:2], scale[:2], zero[:2])
                if not torch.allclose(check, weight[:2].float(), rtol=1e-5, atol=1e-6):
                    raise RuntimeError(f"GGUF tensor {gguf_name} does not match the loaded weight (name or row order)")
            else:
                codes, scale, zero = quantize_int4(weight, group)
            return Int4Linear(codes, scale, zero, group, bias, keep_rows=keep_rows), "int4", ""
        target, note = "int8", f"{n}x{k} does not fit the int4 kernel (group {group}); stored as int8"
    if target == "int8":
        codes8, scale8 = quantize_int8(weight)
        return Int8Linear(codes8, scale8, bias), "int8", note
    # bf16: the module stays; the final parameter cast in apply_weights converts it (ties kept)
    return None, "bf16", note


def _float32_logits(module, inputs, output):
    return output.float()


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _kernel_description(kernel: str) -> str:
    """What the int4 layers call and why, e.g. "decodelab AVX-512 BF16 int4 kernel (int4_avx512-....so)"
    or "PyTorch's int4 kernel (this CPU lacks avx512_bf16)"."""
    status = native_int4.status()
    if kernel == "decodelab" or not status.startswith("decodelab"):
        return status
    return "PyTorch's int4 kernel (the model was built inside native_int4.torch_kernel())"
