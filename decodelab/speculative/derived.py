"""Models derived from a loaded one without copying weights: truncated depth, trimmed head.

Used by self-drafting (`LayerSkip`: the target's first L layers plus its own norm and head)
and by `VocabTrim` (a head restricted to a subset of the vocabulary). The derived model is
built on the meta device and then given the original's modules, so it shares their memory.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import InvalidOption
from ..models.lm import LM


class TrimmedHead(nn.Module):
    """An output head that scores only `token_ids`; every other token gets -inf.

    Exactness is the verifier's job: a draft that never proposes a token outside the subset
    still leaves the target free to emit it (through the residual or bonus token).
    """

    def __init__(self, head: nn.Module, token_ids: torch.Tensor, vocab_size: int):
        super().__init__()
        weight = head.weight.detach()
        self.register_buffer("token_ids", token_ids.to(weight.device, torch.long))
        self.weight_subset = nn.Parameter(weight[self.token_ids].clone(), requires_grad=False)
        self.vocab_size = vocab_size

    @property
    def weight(self) -> torch.Tensor:  # callers ask the head for its width
        return torch.empty(self.vocab_size, 0)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        scores = hidden.to(self.weight_subset.dtype) @ self.weight_subset.T  # bf16 hidden with int4/int8 heads
        out = torch.full((*hidden.shape[:-1], self.vocab_size), float("-inf"), dtype=scores.dtype, device=scores.device)
        return out.index_copy(-1, self.token_ids, scores)


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
    return LM(model=derived, tokenizer=lm.tokenizer, name=label, chat=lm.chat, eos_token_ids=lm.eos_token_ids)
