"""Watermarks: EXP and ITS (distortion-free, Kuditipudi et al. 2023), KGW (Kirchenbauer et al. 2023)
and a black-box selection watermark, each with a detector that returns p-values.

Example:
    >>> import decodelab as dl
    >>> from decodelab import watermark
    >>> lm = dl.load("tiny-random", vocab_size=32)
    >>> out = watermark.generate(lm, "hello", key="secret", scheme="exp", max_new_tokens=8)
    >>> [result] = watermark.detect(lm, [out.token_ids], key="secret", resamples=99)
"""

from .blackbox import blackbox_generate, blackbox_score, blackbox_select
from .detect import detect
from .detection import Detection
from .keys import EmptyText, ForeignTokens, InvalidKey, WatermarkError
from .schemes import SCHEMES, WatermarkVerifier, generate

__all__ = [
    "generate", "detect", "Detection", "WatermarkVerifier", "SCHEMES", "blackbox_generate", "blackbox_select",
    "blackbox_score", "WatermarkError", "InvalidKey", "EmptyText", "ForeignTokens",
]
