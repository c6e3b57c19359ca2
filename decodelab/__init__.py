"""decodelab: token-level inference with causal language models."""

from .errors import (
    DecodelabError, InstallError, InvalidOption, InvalidPrompt, ModelNotFound, ModelNotInstalled,
    PromptTooLong, VocabularyMismatch,
)
from .models import LM, load

__version__ = "0.1.0"
__all__ = [
    "DecodelabError", "InstallError", "InvalidOption", "InvalidPrompt", "ModelNotFound",
    "ModelNotInstalled", "PromptTooLong", "VocabularyMismatch", "LM", "load",
]
