"""Gumbel-max sampling with keyed noise: the structural causal model behind counterfactual tokens.

Token t of a row is `argmax_v (log p_t(v) + g_t(v))` with `g_t` standard Gumbel noise. Over random
noise this samples the processed distribution p_t exactly (the Gumbel-max trick); here `g_t` is a
pure function of a key, the prompt's index in the batch and the position t (keyed noise,
`decodelab.sampling.keyed`), so the noise of every step can be recomputed later and held fixed
while the context changes: the Gumbel-max structural causal model of Oberst & Sontag (2019), used
for counterfactual token generation by Chatzi, Benz, Straitouri, Tsirtsis & Gomez-Rodriguez
(2024), "Counterfactual Token Generation in Large Language Models". See `counterfactual.py`.

Exact over random keys; for one key the output is a deterministic function of the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..decoding.method import BuildContext, Capabilities, Method, Parts, register
from ..decoding.protocols import Proposal, Verdict
from ..errors import InvalidOption
from ..sampling.keyed import KeyedNoise
from ..sampling.options import option
from .common import parts_of, shaped_logits, verdict

NAME = "gumbel-max"


def position_noise(key: int | str, row: int, positions: torch.Tensor, vocab: int) -> torch.Tensor:
    """Standard Gumbel noise [len(positions), V] (float64) of one row at the given output positions.

    Example:
        >>> g = position_noise("k", 0, torch.tensor([0, 1]), 8)
        >>> g.shape, bool((g == position_noise("k", 0, torch.tensor([0, 1]), 8)).all())
        (torch.Size([2, 8]), True)
    """
    context = torch.stack([torch.full_like(positions, row), positions], -1)
    return KeyedNoise(key).gumbel(context, vocab)


class GumbelMax:
    """Verifier: argmax of processed log-probabilities plus keyed Gumbel noise.

    `force` {position: token} overrides the choice at those output positions (an intervention);
    `table` [T, V] replaces the keyed noise of positions < T (noise inferred from a text, see
    `counterfactual.posterior_noise`); `rows` maps prompt index -> noise row; `record` keeps the
    processed log-probabilities of every step (row 0) in `logprobs`.

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> out = dl.generate(lm, "hello", strategy="gumbel-max", strategy_options={"key": 7},
        ...                   temperature=1, max_new_tokens=4)
        >>> out.results["gumbel-max"]["key"]
        7
    """

    def __init__(self, key: int | str, force: dict[int, int] | None = None, table: torch.Tensor | None = None,
                 rows: list[int] | None = None, record: bool = False):
        self.key = key
        self.force = dict(force or {})
        self.table = table
        self.rows = rows
        self.record = record
        self.logprobs: list[torch.Tensor] = []

    def noise(self, rows: list[int], positions: list[int], vocab: int) -> torch.Tensor:
        """Noise [B, V] of these (noise row, position) pairs: the table's where it has them."""
        context = torch.tensor([[r, t] for r, t in zip(rows, positions)])
        noise = KeyedNoise(self.key).gumbel(context, vocab)
        if self.table is not None:
            for b, t in enumerate(positions):
                if t < len(self.table):
                    noise[b] = self.table[t]
        return noise

    def verify(self, state: Any, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        logp = shaped_logits(state, target_logits[:, 0]).log_softmax(-1).double()
        if self.record:
            self.logprobs.append(logp[0].cpu())
        groups = [state.groups[i] for i in state.active]
        positions = [len(state.rows[i].output_ids) for i in state.active]
        rows = [self.rows[g] if self.rows else g for g in groups]
        noise = self.noise(rows, positions, logp.shape[-1]).to(logp.device)
        tokens = (logp + noise).argmax(-1)
        for b, t in enumerate(positions):
            if t in self.force:
                tokens[b] = self.force[t]
        return verdict(tokens)

    def results(self, state: Any, row: int, out: Any) -> None:
        sampler = {k: v for k, v in state.config.as_dict().items() if v is not None}
        noise_row = self.rows[state.groups[row]] if self.rows else state.groups[row]
        out.results[NAME] = {"key": self.key, "row": noise_row, "sampler": sampler}


@dataclass
class GumbelOptions:
    key: Any = option(None, "noise key (text or integer; required): the same key gives the same noise",
                      required=True, max_length=4096)


def _build(ctx: BuildContext, o: GumbelOptions) -> Parts:
    if isinstance(o.key, bool) or not isinstance(o.key, (int, str)):
        raise InvalidOption(f"{NAME}: key must be text or an integer, got {o.key!r}", param="key")
    return parts_of(GumbelMax(o.key))


register(Method(NAME, "strategy", "Gumbel-max sampling with keyed noise (replayable; counterfactuals)",
                "Oberst & Sontag 2019; Chatzi et al. 2024, Counterfactual Token Generation in LLMs", GumbelOptions,
                _build, Capabilities(lossless=False, needs_sampling=True, composes_with=frozenset({"constraint"})),
                aliases=("gumbel",), example={"key": "conformance"}))
