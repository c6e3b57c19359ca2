"""decodelab: token-level inference with causal language models."""

# the families register their methods on import (decodelab.decoding.method)
from . import attribution, bytes, constrain, lossy, provenance, search, strategies, tokenizer, uncertainty, watermark  # noqa: A004 (dl.bytes is the byte-level family)
from . import speculative as spec  # noqa: E402
from .attribution import attribute, compress, critical_tokens
from .bytes.fim import fim
from .decoding import GenerationOutput, GenerationStats, TokenRecord, compose, generate, methods, stream
from .errors import (
    DecodelabError,
    InstallError,
    InvalidOption,
    InvalidPrompt,
    ModelNotFound,
    ModelNotInstalled,
    PromptTooLong,
    VocabularyMismatch,
)
from .models import LM, load
from .sampling import KeyedNoise, SamplingConfig
from .strategies import counterfactual
from .uncertainty import cascade, score

__version__ = "0.1.0"
__all__ = [
    "DecodelabError", "InstallError", "InvalidOption", "InvalidPrompt", "ModelNotFound",
    "ModelNotInstalled", "PromptTooLong", "VocabularyMismatch", "LM", "load",
    "generate", "stream", "GenerationOutput", "GenerationStats", "TokenRecord", "KeyedNoise", "SamplingConfig", "spec",
    "constrain", "search", "strategies", "watermark", "compose", "methods", "counterfactual",
    "uncertainty", "score", "cascade", "attribution", "attribute", "compress", "critical_tokens",
    "bytes", "fim", "lossy", "provenance", "tokenizer",
]
