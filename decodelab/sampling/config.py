"""`SamplingConfig`: validated sampler options, turned into a processor list and token draws.

One path serves every caller — plain decoding, the target and the draft of speculative
decoding — so the processed distributions they compare cannot drift apart (as gpt-fast's
`logits_to_probs` does).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from ..errors import InvalidOption
from .options import option, option_specs
from .processors import (
    EpsilonCutoff,
    EtaCutoff,
    FrequencyPresencePenalty,
    LogitBias,
    LogitsProcessor,
    MinP,
    RepetitionPenalty,
    Temperature,
    TokenHistory,
    TopK,
    TopP,
    Typical,
)

MAX_LOGIT_BIAS = 1024  # entries of logit_bias at most


@dataclass(frozen=True)
class SamplingConfig:
    """Sampler options; `temperature=0` is greedy decoding.

    Example:
        >>> cfg = SamplingConfig(temperature=0.7, top_p=0.9)
        >>> cfg.greedy
        False
    """

    temperature: float = option(1.0, "sampling temperature; 0 = greedy (default: the model's generation config, "
                                "else greedy)", ge=0, le=100)
    top_k: int | None = option(None, "keep the k most likely tokens (0 = off)", ge=0, le=1_000_000)
    top_p: float | None = option(None, "nucleus sampling mass", gt=0, le=1)
    min_p: float | None = option(None, "drop tokens below min_p x the top probability", ge=0, lt=1)
    typical_p: float | None = option(None, "locally typical sampling mass", gt=0, le=1)
    epsilon_cutoff: float | None = option(None, "epsilon sampling: drop tokens with probability below this", ge=0, lt=1)
    eta_cutoff: float | None = option(None, "eta sampling cutoff", ge=0, lt=1)
    repetition_penalty: float | None = option(None, "CTRL repetition penalty (>1 discourages repeats)", gt=0, le=100)
    frequency_penalty: float | None = option(None, "OpenAI-style frequency penalty", ge=-2, le=2)
    presence_penalty: float | None = option(None, "OpenAI-style presence penalty", ge=-2, le=2)
    logit_bias: dict[int, float] | None = option(None, "token id -> bias added to its logit, in [-100, 100]",
                                                 cli=False)

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_options(cls, defaults: dict[str, Any] | None = None, **options: Any) -> SamplingConfig:
        """Merge a model's defaults with explicit options (None means 'not given')."""
        merged = {k: v for k, v in (defaults or {}).items() if k in cls.option_names()}
        merged.update({k: v for k, v in options.items() if v is not None})
        if "temperature" not in merged:
            merged["temperature"] = 0.0  # no sampling settings anywhere: greedy, as HF does
        return cls(**merged)

    def validate(self) -> None:
        """Every field against its option spec (the bounds the CLI and the server show), then logit_bias."""
        for spec in option_specs(type(self)):
            if spec.name != "logit_bias":
                spec.check(getattr(self, spec.name))
        if self.logit_bias is not None:
            if not isinstance(self.logit_bias, dict):
                raise InvalidOption("logit_bias must map token ids to numbers", param="logit_bias")
            if len(self.logit_bias) > MAX_LOGIT_BIAS:
                raise InvalidOption(f"logit_bias has at most {MAX_LOGIT_BIAS} entries", param="logit_bias")
            for token, bias in self.logit_bias.items():
                try:
                    int(token)
                except (TypeError, ValueError):
                    raise InvalidOption(f"logit_bias key {str(token)[:40]!r} is not a token id",
                                        param="logit_bias") from None
                if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not -100 <= bias <= 100:
                    raise InvalidOption(f"logit_bias values must be finite numbers in [-100, 100], got {bias!r}"[:200],
                                        param="logit_bias")

    def check_vocab(self, vocab_size: int) -> None:
        for token in (self.logit_bias or {}):
            if not 0 <= int(token) < vocab_size:
                raise InvalidOption(f"logit_bias token {token} is outside the vocabulary (0..{vocab_size - 1})")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def processors(self) -> list[LogitsProcessor]:
        """The processor list in Hugging Face's order: bias, penalties, then warpers."""
        out: list[LogitsProcessor] = []
        if self.logit_bias:
            out.append(LogitBias(tuple((int(t), float(b)) for t, b in self.logit_bias.items())))
        if self.repetition_penalty not in (None, 1, 1.0):
            out.append(RepetitionPenalty(float(self.repetition_penalty)))
        if self.frequency_penalty or self.presence_penalty:
            out.append(FrequencyPresencePenalty(float(self.frequency_penalty or 0), float(self.presence_penalty or 0)))
        if self.greedy:
            return out
        if self.temperature != 1:
            out.append(Temperature(float(self.temperature)))
        if self.top_k:
            out.append(TopK(int(self.top_k)))
        if self.top_p is not None and self.top_p < 1:
            out.append(TopP(float(self.top_p)))
        if self.min_p:
            out.append(MinP(float(self.min_p)))
        if self.typical_p is not None and self.typical_p < 1:
            out.append(Typical(float(self.typical_p)))
        if self.epsilon_cutoff:
            out.append(EpsilonCutoff(float(self.epsilon_cutoff)))
        if self.eta_cutoff:
            out.append(EtaCutoff(float(self.eta_cutoff)))
        return out


def process_logits(logits: torch.Tensor, config: SamplingConfig, history: TokenHistory | None = None,
                   processors: list[LogitsProcessor] | None = None) -> torch.Tensor:
    """Processed logits (float32, removed tokens at -inf) for logits [N, V].

    Greedy configs return logits with everything but the argmax removed, so the processed
    distribution is the one-hot that greedy decoding samples from.
    """
    out = logits.float()
    for processor in processors if processors is not None else config.processors():
        out = processor(out, history)
    if config.greedy:
        top = out.argmax(-1, keepdim=True)
        out = torch.full_like(out, float("-inf")).scatter(-1, top, 0.0)
    return out


def processed_probs(logits: torch.Tensor, config: SamplingConfig, history: TokenHistory | None = None,
                    processors: list[LogitsProcessor] | None = None) -> torch.Tensor:
    """Probabilities of the processed distribution, [N, V]."""
    return process_logits(logits, config, history, processors).softmax(-1)


def sample_from_probs(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw: one token per row of probs [N, V] from uniforms [N] in [0, 1)."""
    cdf = probs.double().cumsum(-1)
    target = (uniforms.double().to(probs.device) * cdf[:, -1]).unsqueeze(-1)
    token = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    # Guard the upper edge against rounding and never land on a zero-probability token.
    token = token.clamp(max=probs.shape[-1] - 1)
    zero = probs.gather(-1, token[:, None]).squeeze(-1) <= 0
    if bool(zero.any()):
        token = torch.where(zero, probs.argmax(-1), token)
    return token


def draw_uniforms(generators: list[torch.Generator], rows: list[int] | None = None) -> torch.Tensor:
    """One uniform per row from that row's generator."""
    rows = range(len(generators)) if rows is None else rows
    return torch.stack([torch.rand((), dtype=torch.float64, generator=generators[r]) for r in rows])
