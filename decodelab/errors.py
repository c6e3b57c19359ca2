"""Typed errors. Every error decodelab raises on bad input is a `DecodelabError`.

The CLI prints `error: <message>` and exits non-zero for these; the server maps them to 4xx.
"""

from __future__ import annotations


class DecodelabError(Exception):
    """Base class of every error decodelab raises on bad input or bad state."""

    exit_code = 2
    http_status = 400


class ModelNotFound(DecodelabError):
    """A model name or path that does not resolve to a model."""

    http_status = 404


class ModelNotInstalled(ModelNotFound):
    """A named model pack whose PyPI package is not installed (see `decodelab models pull`)."""


class InvalidOption(DecodelabError, ValueError):
    """An option outside its valid range or of the wrong type. `param` names the option and
    `code` says what is wrong when the caller knows (the server reports both)."""

    def __init__(self, message: str = "", *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param = param
        self.code = code


class InvalidPrompt(DecodelabError, ValueError):
    """An empty, malformed or undecodable prompt."""


class PromptTooLong(InvalidPrompt):
    """A prompt (plus requested new tokens, where checked) longer than the model's context."""


class VocabularyMismatch(DecodelabError, ValueError):
    """Two models that must share a tokenizer (draft/target) do not."""


class InstallError(DecodelabError):
    """Installing a model pack with pip failed."""

    http_status = 500
