"""DoLa: decoding by contrasting layers (Chuang, Xie, Luo, Kim, Glass & He 2024, "DoLa: Decoding
by Contrasting Layers Improves Factuality in Large Language Models", ICLR).

The next-token scores are `log p_final(v) - log p_premature(v)` over the tokens the final layer
finds plausible (`p_final(v) >= 0.1 * max p_final`, the paper's adaptive plausibility
constraint); the premature layer is, per row and per step, the candidate layer whose early-exit
distribution (final norm + LM head on its hidden state) is farthest from the final one in
Jensen-Shannon divergence. `dola_layers`: "low" or "high" (Hugging Face's buckets: every second
layer of the lower or upper half, skipping the embeddings when they are tied to the head) or
explicit layer numbers (0 = embeddings, N = the final layer).

Exact ties of the contrast go to the token the final layer prefers, so with the final layer as the
premature layer (contrast 0 everywhere) DoLa is greedy decoding. Unlike Hugging Face, the final
norm is applied to early exits, as in the paper. The sampler's processors act on the contrast
scores, so DoLa also samples (with `temperature > 0`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..decoding.method import BuildContext, Method, Parts, register
from ..decoding.protocols import Proposal, Verdict
from ..errors import InvalidOption
from ..models.lm import LM
from ..sampling.options import option
from .common import KeepsHiddenStates, choose, early_exit_logits, parts_of, shaped_logits, verdict
from .slot import WITH_CONSTRAINTS

RELATIVE_TOP = 0.1


def candidate_layers(lm: LM, dola_layers: Any) -> list[int]:
    """The premature layers `dola_layers` names ("low", "high", an int or a list of ints).

    Example:
        >>> import decodelab as dl
        >>> candidate_layers(dl.load("tiny-random", num_layers=4), "high")
        [2]
    """
    final = lm.num_layers
    start = 2 if getattr(lm.model.config, "tie_word_embeddings", False) else 0
    if dola_layers == "low":
        if start >= final // 2:
            return [min(start, final - 1)]
        return list(range(start, final // 2 if final <= 40 else 20, 2))
    if dola_layers == "high":
        return list(range(final // 2, final, 2) if final <= 40 else range(final - 20, final, 2))
    values = [dola_layers] if isinstance(dola_layers, int) else dola_layers
    if isinstance(values, str):
        try:
            values = [int(x) for x in values.split(",")]
        except ValueError:
            values = None
    if (not isinstance(values, (list, tuple)) or not values or len(values) > final + 1
            or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= final for v in values)):
        raise InvalidOption(f"dola: dola_layers must be 'low', 'high' or layer numbers in [0, {final}], "
                            f"got {dola_layers!r}", param="dola_layers")
    return sorted(set(values))


def js_divergence(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence over the last axis, from log-probabilities."""
    m = (0.5 * (logp.exp() + logq.exp())).clamp_min(1e-30).log()
    kl = lambda a: (a.exp() * (a - m)).nan_to_num().sum(-1)  # noqa: E731
    return 0.5 * (kl(logp) + kl(logq))


def dola_scores(final_logits: torch.Tensor, premature: torch.Tensor) -> torch.Tensor:
    """Contrast scores [B, V] from final logits [B, V] and candidate early-exit logits [L, B, V]:
    the farthest layer (JSD) per row, `-inf` outside the plausible head."""
    final = final_logits.float().log_softmax(-1)
    early = premature.float().log_softmax(-1)
    if early.shape[0] > 1:
        chosen = js_divergence(final[None], early).argmax(0)  # [B]
        base = early[chosen, torch.arange(final.shape[0])]
    else:
        base = early[0]
    head = final >= final.max(-1, keepdim=True).values + math.log(RELATIVE_TOP)
    return (final - base).masked_fill(~head, float("-inf"))


class DoLa(KeepsHiddenStates):
    """Verifier of DoLa (see the module docstring).

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> out = dl.generate(lm, "hello", strategy="dola", strategy_options={"dola_layers": "low"},
        ...                   max_new_tokens=4)
    """

    def __init__(self, layers: list[int]):
        self.layers = layers

    def verify(self, state: Any, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        final = target_logits[:, 0].float()
        hidden = state.seq.hidden_states
        top = state.lm.num_layers
        premature = torch.stack([final if layer == top else early_exit_logits(state.lm, hidden[layer][:, -1])
                                 for layer in self.layers])
        contrast = dola_scores(final, premature)
        return verdict(choose(state, shaped_logits(state, contrast), tie_break=final))


@dataclass
class DoLaOptions:
    dola_layers: Any = option("high", "premature layers: low, high, or layer numbers like 0,2 (N = final)",
                              max_length=256)


def _build(ctx: BuildContext, o: DoLaOptions) -> Parts:
    return parts_of(DoLa(candidate_layers(ctx.lm, o.dola_layers)))


register(Method("dola", "strategy", "DoLa: contrast the final layer with a premature layer",
                "Chuang et al. 2024, DoLa: Decoding by Contrasting Layers Improves Factuality in LLMs", DoLaOptions,
                _build, WITH_CONSTRAINTS, example={"dola_layers": "low"}))
