"""Logits processors with one signature: `processor(logits [N, V], history) -> logits [N, V]`.

Each returns new logits where removed tokens are -inf; they compose in a list (see
`SamplingConfig.processors`). Semantics follow Hugging Face's processors of the same name, so
that comparisons with `transformers.generate` under the same settings are like for like:

- temperature: Ackley et al. 1985 (logits / T)
- top-k: Fan et al. 2018; top-p (nucleus): Holtzman et al. 2020; min-p: Nguyen et al. 2024
- locally typical: Meister et al. 2023, "Locally Typical Sampling"
- epsilon and eta sampling: Hewitt et al. 2022, "Truncation Sampling as Language Model Desmoothing"
- repetition penalty: Keskar et al. 2019 (CTRL); frequency / presence: OpenAI API semantics
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

NEG_INF = float("-inf")


@dataclass
class TokenHistory:
    """What penalties need, per logits row: tokens seen (prompt + output) and output counts."""

    seen: torch.Tensor  # bool [N, V]
    output_counts: torch.Tensor  # float [N, V]

    @classmethod
    def from_ids(cls, prompt_ids: list[list[int]], output_ids: list[list[int]], vocab_size: int,
                 device: torch.device | str = "cpu") -> TokenHistory:
        rows = len(prompt_ids)
        counts = torch.zeros(rows, vocab_size, device=device)
        seen = torch.zeros(rows, vocab_size, dtype=torch.bool, device=device)
        for r in range(rows):
            if output_ids[r]:
                out = torch.tensor(output_ids[r], device=device)
                counts[r].index_add_(0, out, torch.ones(len(output_ids[r]), device=device))
            if prompt_ids[r]:
                seen[r, torch.tensor(prompt_ids[r], device=device)] = True
        return cls(seen=seen | (counts > 0), output_counts=counts)

    def extend_along(self, tokens: torch.Tensor) -> TokenHistory:
        """Histories after each prefix of `tokens` [N, k]: rows [N*(k+1)], prefix 0..k per row."""
        n, k = tokens.shape
        vocab = self.output_counts.shape[1]
        steps = torch.zeros(n, k + 1, vocab, device=tokens.device)
        if k:
            onehot = torch.nn.functional.one_hot(tokens, vocab).to(steps.dtype)
            steps[:, 1:] = onehot.cumsum(1)
        return self._plus(steps)

    def extend_along_tree(self, tokens: torch.Tensor, on_path: torch.Tensor) -> TokenHistory:
        """Histories at each tree position: rows [N*(n+1)]; position 0 is the base, position
        j+1 adds the tokens on the root-to-node path of node j (`on_path` [N, n, n]: node j's
        ancestors and itself, `engine.tree.ancestor_mask` of each row's parents)."""
        n_rows, n = tokens.shape
        vocab = self.output_counts.shape[1]
        steps = torch.zeros(n_rows, n + 1, vocab, device=tokens.device)
        if n:
            onehot = torch.nn.functional.one_hot(tokens, vocab).to(steps.dtype)
            steps[:, 1:] = torch.einsum("bij,bjv->biv", on_path.to(steps.dtype), onehot)
        return self._plus(steps)

    def _plus(self, steps: torch.Tensor) -> TokenHistory:
        """Histories with extra output counts steps [N, m, V] added: rows [N*m], row-major."""
        rows, m, vocab = steps.shape
        counts = (self.output_counts[:, None] + steps).reshape(rows * m, vocab)
        seen = (self.seen[:, None] | (steps > 0)).reshape(rows * m, vocab)
        return TokenHistory(seen=seen, output_counts=counts)

    def repeat_rows(self, times: int) -> TokenHistory:
        return TokenHistory(self.seen.repeat_interleave(times, 0), self.output_counts.repeat_interleave(times, 0))


class LogitsProcessor(Protocol):
    needs_history: bool

    def __call__(self, logits: torch.Tensor, history: TokenHistory | None) -> torch.Tensor: ...


def entropy(logp: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row of log-probabilities [..., V], keeping the last dim (size 1)."""
    return -(torch.nan_to_num(logp.exp() * logp)).sum(-1, keepdim=True)


def _keep_at_least_top1(remove: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    top = logits.argmax(-1, keepdim=True)
    return remove.scatter(-1, top, False)


@dataclass(frozen=True)
class LogitBias:
    bias: tuple[tuple[int, float], ...]
    needs_history = False

    def __call__(self, logits, history):
        ids = torch.tensor([t for t, _ in self.bias], device=logits.device)
        values = torch.tensor([b for _, b in self.bias], dtype=logits.dtype, device=logits.device)
        return logits.index_add(-1, ids, values.expand(logits.shape[0], -1))


@dataclass(frozen=True)
class RepetitionPenalty:
    penalty: float
    needs_history = True

    def __call__(self, logits, history):
        scaled = torch.where(logits < 0, logits * self.penalty, logits / self.penalty)
        return torch.where(history.seen, scaled, logits)


@dataclass(frozen=True)
class FrequencyPresencePenalty:
    frequency: float
    presence: float
    needs_history = True

    def __call__(self, logits, history):
        counts = history.output_counts.to(logits.dtype)
        return logits - self.frequency * counts - self.presence * (counts > 0).to(logits.dtype)


@dataclass(frozen=True)
class Temperature:
    temperature: float
    needs_history = False

    def __call__(self, logits, history):
        return logits / self.temperature


@dataclass(frozen=True)
class TopK:
    k: int
    needs_history = False

    def __call__(self, logits, history):
        k = min(self.k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, NEG_INF)


@dataclass(frozen=True)
class TopP:
    p: float
    needs_history = False

    def __call__(self, logits, history):
        sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        remove_sorted = cumulative <= (1 - self.p)
        remove_sorted[..., -1] = False
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        return logits.masked_fill(remove, NEG_INF)


@dataclass(frozen=True)
class MinP:
    p: float
    needs_history = False

    def __call__(self, logits, history):
        probs = logits.softmax(-1)
        threshold = self.p * probs.max(-1, keepdim=True).values
        return logits.masked_fill(probs < threshold, NEG_INF)


@dataclass(frozen=True)
class Typical:
    mass: float
    needs_history = False

    def __call__(self, logits, history):
        logp = logits.log_softmax(-1)
        p = logp.exp()
        surprise_gap = (-logp - entropy(logp)).abs()
        sorted_gap, order = torch.sort(surprise_gap, dim=-1)
        cumulative = p.gather(-1, order).cumsum(-1)
        last = (cumulative < self.mass).sum(-1, keepdim=True).clamp(max=logits.shape[-1] - 1)
        remove_sorted = sorted_gap > sorted_gap.gather(-1, last)
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        return logits.masked_fill(remove, NEG_INF)


@dataclass(frozen=True)
class EpsilonCutoff:
    epsilon: float
    needs_history = False

    def __call__(self, logits, history):
        remove = logits.softmax(-1) < self.epsilon
        return logits.masked_fill(_keep_at_least_top1(remove, logits), NEG_INF)


@dataclass(frozen=True)
class EtaCutoff:
    epsilon: float
    needs_history = False

    def __call__(self, logits, history):
        logp = logits.log_softmax(-1)
        p = logp.exp()
        eta = torch.minimum(torch.tensor(self.epsilon, device=logits.device),
                            math.sqrt(self.epsilon) * torch.exp(-entropy(logp)))
        remove = p < eta
        return logits.masked_fill(_keep_at_least_top1(remove, logits), NEG_INF)
