"""Models derived from a loaded one without copying weights: truncated depth, trimmed head.

Used by self-drafting (`LayerSkip`: the target's first L layers plus its own norm and head)
and by `VocabTrim` (a head restricted to a subset of the vocabulary). The derived model is
built on the meta device and then given the original's modules, so it shares their memory.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..engine.quantized_linear import ACTIVATION_DTYPE, Int4Linear, Int8Linear, quantize_int4, quantize_int8
from ..errors import InvalidOption
from ..models.lm import LM


class TrimmedHead(nn.Module):
    """An output head that scores only `token_ids`; every other token gets -inf.

    Exactness is the verifier's job: a draft that never proposes a token outside the subset
    still leaves the target free to emit it (through the residual or bonus token). A packed
    (int4/int8) head stays packed: its subset rows are re-encoded at the same precision, so the
    trimmed draft reads fewer bytes per token instead of more.
    """

    def __init__(self, head: nn.Module, token_ids: torch.Tensor, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.register_buffer("token_ids", token_ids.to(_module_device(head), torch.long))
        self.weight_subset: nn.Parameter | None = None
        self.packed_subset: nn.Module | None = None
        if isinstance(head, (Int4Linear, Int8Linear)):
            self.packed_subset = _packed_rows(head, self.token_ids)
        else:
            weight = head.weight.detach()
            self.weight_subset = nn.Parameter(weight[self.token_ids].clone(), requires_grad=False)

    @property
    def weight(self) -> torch.Tensor:  # callers ask the head for its width
        return torch.empty(self.vocab_size, 0)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.packed_subset is not None:
            scores = self.packed_subset(hidden)[..., : self.token_ids.numel()].float()
        else:
            scores = hidden.to(self.weight_subset.dtype) @ self.weight_subset.T
        out = torch.full((*hidden.shape[:-1], self.vocab_size), float("-inf"), dtype=scores.dtype, device=scores.device)
        return out.index_copy(-1, self.token_ids, scores)


def _module_device(module: nn.Module) -> torch.device:
    tensor = next(iter([*module.parameters(), *module.buffers()]), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _packed_rows(head: Int4Linear | Int8Linear, token_ids: torch.Tensor) -> nn.Module:
    """The head's rows for `token_ids`, re-encoded at the head's precision (int4 rows padded with
    zero rows to the kernel's multiple of 16; the caller drops the padding columns)."""
    keeps_rows = isinstance(head, Int8Linear) or head.keeps_rows
    if keeps_rows:
        rows = head.dequantize_rows(token_ids).float()
    else:
        # an untied int4 head keeps no row codes: multiply by a bfloat16 identity (the exact
        # float32 `dequantize` takes minutes on a 150k-row head; bf16 rounding is harmless in a draft)
        eye = torch.eye(head.in_features, dtype=ACTIVATION_DTYPE)
        columns = head(eye) if head.bias is None else head(eye) - head.bias
        rows = columns.T[token_ids].float()
    if isinstance(head, Int8Linear):
        return Int8Linear(*quantize_int8(rows))
    padding = -rows.shape[0] % 16
    if padding:
        rows = torch.cat([rows, rows.new_zeros(padding, rows.shape[1])])
    return Int4Linear(*quantize_int4(rows, head.group_size), head.group_size)


def derive_lm(lm: LM, *, num_layers: int | None = None, layer_ids: list[int] | None = None,
              token_ids: torch.Tensor | None = None, name: str | None = None) -> LM:
    """A view of `lm` with fewer layers and/or a trimmed head, sharing its weights.

    Example:
        >>> import decodelab as dl
        >>> shallow = derive_lm(dl.load("tiny-random", num_layers=4), num_layers=2)
        >>> shallow.num_layers
        2
    """
    model = lm.model
    layers = model.model.layers
    if layer_ids is None:
        depth = lm.num_layers if num_layers is None else num_layers
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= lm.num_layers:
            raise InvalidOption(f"layers must be between 1 and the model's depth {lm.num_layers}, got {depth!r}")
        layer_ids = list(range(depth))
    if not layer_ids or any(not 0 <= i < lm.num_layers for i in layer_ids) or sorted(set(layer_ids)) != list(layer_ids):
        raise InvalidOption(f"layer ids must be increasing and within 0..{lm.num_layers - 1}")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(layer_ids)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in layer_ids]
    with torch.device("meta"):
        derived = type(model)(config)
    derived.model.embed_tokens = model.model.embed_tokens
    derived.model.norm = model.model.norm
    derived.model.rotary_emb = model.model.rotary_emb
    chosen = []
    for position, index in enumerate(layer_ids):
        # shallow copies share parameters; each gets its own child-module dict so that giving
        # the copy its own attention (with the derived cache index) leaves the original intact
        layer = copy.copy(layers[index])
        layer._modules = dict(layer._modules)
        layer.self_attn = copy.copy(layer.self_attn)
        layer.self_attn.layer_idx = position
        chosen.append(layer)
    derived.model.layers = nn.ModuleList(chosen)
    derived.lm_head = model.lm_head if token_ids is None else TrimmedHead(model.lm_head, token_ids, lm.vocab_size)
    derived.generation_config = model.generation_config
    leftovers = [n for n, t in [*derived.named_parameters(), *derived.named_buffers()] if t.is_meta]
    if leftovers:
        raise RuntimeError(f"derived model kept meta tensors: {leftovers[:3]}")
    label = name or f"{lm.name}[layers={len(layer_ids)}{',trimmed' if token_ids is not None else ''}]"
    if hasattr(model, "_decodelab_dtype"):
        derived._decodelab_dtype = model._decodelab_dtype
    return LM(model=derived, tokenizer=lm.tokenizer, name=label, chat=lm.chat, eos_token_ids=lm.eos_token_ids,
              weights=lm.weights, gguf_path=lm.gguf_path)
