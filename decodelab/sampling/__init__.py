"""Sampling: logits processors, the sampler config, token draws and keyed randomness."""

from .config import (
    SamplingConfig,
    draw_uniforms,
    process_logits,
    processed_probs,
    sample_from_probs,
)
from .keyed import KeyedNoise, key_to_int, row_generators, splitmix64
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

__all__ = [
    "SamplingConfig", "process_logits", "processed_probs", "sample_from_probs", "draw_uniforms",
    "KeyedNoise", "key_to_int", "row_generators", "splitmix64", "TokenHistory", "LogitsProcessor",
    "Temperature", "TopK", "TopP", "MinP", "Typical", "EpsilonCutoff", "EtaCutoff",
    "RepetitionPenalty", "FrequencyPresencePenalty", "LogitBias",
]
