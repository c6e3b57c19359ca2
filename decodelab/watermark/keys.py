"""Watermark keys: every random quantity is recomputed from the key with `KeyedNoise`.

Nothing is stored: the EXP key sequence xi (n x V uniforms), the ITS uniforms u and permutation
pi, the KGW green lists and the black-box n-gram scores are pure functions of (key, index/context),
so detection recomputes exactly what generation used. Each scheme hashes its own context tag so
that the schemes' randomness is independent for one key.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch

from ..errors import DecodelabError, InvalidOption, InvalidPrompt, VocabularyMismatch
from ..sampling.keyed import KeyedNoise
from ..text import check_text

# Context tags (negative, so they never collide with token ids or key positions).
_ITS_U = -1
_ITS_PI = -2
_KGW = -3
_BLACKBOX = -4


class WatermarkError(DecodelabError):
    """Base class of the watermark family's errors."""


class InvalidKey(WatermarkError, InvalidOption):
    """A watermark key that is not a non-empty string, bytes or an integer."""


class EmptyText(WatermarkError, InvalidPrompt):
    """A text to detect that has no tokens."""


class ForeignTokens(WatermarkError, VocabularyMismatch):
    """Token ids outside the model's vocabulary (text from another tokenizer)."""


MAX_KEY_CHARS = 4096
MAX_KEY_BITS = 256


def check_key(key: Any) -> int | str | bytes:
    """The key itself if well-formed, else `InvalidKey`."""
    if isinstance(key, bool) or not isinstance(key, (int, str, bytes)):
        raise InvalidKey(f"a watermark key is a non-empty string, bytes or an integer, got {type(key).__name__}")
    if isinstance(key, (str, bytes)) and not key.strip():
        raise InvalidKey("the watermark key is empty")
    if isinstance(key, (str, bytes)) and len(key) > MAX_KEY_CHARS:
        raise InvalidKey(f"a watermark key has at most {MAX_KEY_CHARS} characters, got {len(key)}")
    if isinstance(key, int) and not -(1 << MAX_KEY_BITS) < key < 1 << MAX_KEY_BITS:
        raise InvalidKey(f"an integer watermark key has at most {MAX_KEY_BITS} bits")
    if isinstance(key, str):
        check_text(key, "the watermark key", InvalidKey)
    return key


def noise(key: Any) -> KeyedNoise:
    return KeyedNoise(check_key(key))


@lru_cache(maxsize=4)
def exp_key_sequence(key: int | str | bytes, n: int, vocab_size: int) -> np.ndarray:
    """xi: [n, V] uniforms, row l = KeyedNoise(key).uniform(context=[l], V)."""
    positions = torch.arange(n, dtype=torch.long)[:, None]
    out = np.empty((n, vocab_size))
    kn = noise(key)
    for start in range(0, n, 32):  # chunks bound the int64 temporaries
        out[start:start + 32] = kn.uniform(positions[start:start + 32], vocab_size).numpy()
    out.setflags(write=False)
    return out


def exp_key_columns(key: int | str | bytes, n: int, tokens: np.ndarray) -> np.ndarray:
    """xi[:, tokens] ([n, len(tokens)]) without the other V - len(tokens) columns: detection only
    needs the key at the text's tokens. Same numbers as `exp_key_sequence(key, n, V)[:, tokens]`
    (KeyedNoise hashes each index independently), at a cost that does not grow with V.

    Example:
        >>> import numpy as np
        >>> cols = exp_key_columns("k", 4, np.array([3, 9]))
        >>> bool((cols == exp_key_sequence("k", 4, 16)[:, [3, 9]]).all())
        True
    """
    index = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    return noise(key).uniform_at(torch.arange(n, dtype=torch.long)[:, None], index).numpy()


@lru_cache(maxsize=4)
def its_key(key: int | str | bytes, n: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(u [n], rank [V]): position l's uniform and the key permutation pi as token -> rank.

    pi is the ranking of V keyed uniforms, a uniformly random permutation.
    """
    kn = noise(key)
    contexts = torch.stack([torch.arange(n), torch.full((n,), _ITS_U)], 1)
    u = kn.uniform(contexts, 1)[:, 0].numpy()
    scores = kn.uniform(torch.tensor([_ITS_PI]), vocab_size)
    rank = torch.empty(vocab_size, dtype=torch.long)
    rank[scores.argsort()] = torch.arange(vocab_size)
    u.setflags(write=False)
    out = rank.numpy()
    out.setflags(write=False)
    return u, out


def green_mask(key: Any, previous: torch.Tensor, vocab_size: int, gamma: float) -> torch.Tensor:
    """KGW green lists [..., V] (bool) for previous tokens [...]: each token is green with
    probability gamma, independently, given the key."""
    contexts = torch.stack([previous.long(), torch.full_like(previous.long(), _KGW)], -1)
    return noise(key).uniform(contexts, vocab_size) < gamma


def ngram_uniforms(key: Any, previous: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Black-box scores: one keyed uniform per (previous token, token) pair."""
    contexts = torch.stack([previous.long(), tokens.long(), torch.full_like(tokens.long(), _BLACKBOX)], -1)
    return noise(key).uniform(contexts, 1)[..., 0]


def check_tokens(tokens: Any, vocab_size: int) -> np.ndarray:
    """Token ids as int64, or a typed error for empty / out-of-vocabulary input."""
    array = np.asarray(tokens)
    if array.size == 0:
        raise EmptyText("the text has no tokens")
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise InvalidPrompt("a tokenised text is a flat list of integer token ids")
    array = array.astype(np.int64)
    bad = array[(array < 0) | (array >= vocab_size)]
    if bad.size:
        raise ForeignTokens(
            f"token id {int(bad[0])} is outside the vocabulary (0..{vocab_size - 1}); "
            "was the text tokenised with another tokenizer?"
        )
    return array
