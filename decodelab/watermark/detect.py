"""Watermark detection with p-values for EXP, ITS (Kuditipudi et al. 2023), KGW (Kirchenbauer et
al. 2023) and the black-box selection scheme.

- EXP / ITS: the paper's statistics (edit-robust by default) and its permutation test over fresh
  random key sequences (`decodelab.watermark.align`); the p-value is exact under H0 (text
  independent of the key) for any number of resamples.
- KGW: z-score of the green-token count over scored tokens (each token after the first, seeded by
  its predecessor); the p-value is the one-sided normal tail, as in the paper (approximate for short
  texts; repeated (previous, token) pairs are counted once so that scored tokens are independent).
- black-box: see `decodelab.watermark.blackbox` (exact Gamma tail).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import stats

from ..errors import InvalidOption, InvalidPrompt
from ..models.lm import LM
from . import align
from .blackbox import blackbox_detect
from .detection import Detection
from .keys import EmptyText, check_key, check_tokens, exp_key_columns, green_mask, its_key
from .progress import detection_progress
from .schemes import MAX_N

DETECT_SCHEMES = ("exp", "its", "kgw", "blackbox")
DEFAULT_GAP_COST = {"exp": 0.0, "its": 0.4}  # the paper's gap costs (its gamma) for EXP-edit / ITS-edit
DEFAULT_RESAMPLES = 1000
DEFAULT_STOP_AFTER = 10  # Besag-Clifford: stop a text's permutation test at its 10th null hit
MAX_RESAMPLES = 1_000_000


def tokenize_texts(lm: LM | None, texts: Any) -> list[np.ndarray]:
    """A text, a list of texts, a token-id list or a list of token-id lists -> token id arrays."""
    if isinstance(texts, str) or (isinstance(texts, (list, tuple)) and texts and all(
            isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in texts)):
        texts = [texts]
    if not isinstance(texts, (list, tuple)) or not texts:
        raise EmptyText("no text to detect")
    out = []
    for text in texts:
        if isinstance(text, str):
            if lm is None:
                raise InvalidOption("detecting text (not token ids) needs the model's tokenizer: pass lm")
            if not text.strip():
                raise EmptyText("the text is empty")
            ids = list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
            if not ids:
                raise EmptyText("the text encodes to no tokens")
            out.append(np.asarray(ids, np.int64))
        elif isinstance(text, (list, tuple, np.ndarray, torch.Tensor)):
            out.append(np.asarray(text.tolist() if isinstance(text, torch.Tensor) else text))
        else:
            raise InvalidPrompt("each text is a string or a list of token ids")
    return out


def detect(lm: LM | None, texts: Any, *, key: Any, scheme: str = "exp", vocab_size: int | None = None,
           n: int = 256, edit: bool = True, gap_cost: float | None = None, block: int | None = None,
           resamples: int = DEFAULT_RESAMPLES, stop_after: int | None = DEFAULT_STOP_AFTER, seed: int = 0,
           green_fraction: float = 0.25, workers: int | None = None, progress: bool | None = None) -> list[Detection]:
    """p-values for texts (strings need `lm`; token ids need `lm` or `vocab_size`).

    EXP/ITS options: n (key length used at generation), edit (edit-robust statistic), gap_cost
    (the paper's gamma; default 0 for EXP, 0.4 for ITS), block (sub-block length k; default the whole text),
    resamples (T), stop_after (Besag-Clifford: a text stops resampling at its stop_after-th null hit
    and reports stop_after / resamples run, a valid p-value that only coarsens large p-values; default
    10; None or 0 runs all T), seed (of the resampled keys), progress (a bar with texts/s on stderr;
    None = when stderr is a terminal and the work is long). KGW: green_fraction. The alignment costs and the gap cost are rounded to
    multiples of 1/4096 (`align.SCALE`) the same way for the key and the resampled keys, so the
    p-value stays exact; `Detection.statistic` is in cost units.

    Example:
        >>> import decodelab as dl
        >>> from decodelab import watermark
        >>> lm = dl.load("tiny-random", vocab_size=32)
        >>> [d] = watermark.detect(lm, [[5, 6, 7, 8]], key="secret", resamples=19)
        >>> 0 < d.p_value <= 1
        True
    """
    if scheme not in DETECT_SCHEMES:
        raise InvalidOption(f"unknown watermark scheme {scheme!r}; choose one of {', '.join(DETECT_SCHEMES)}")
    check_key(key)
    vocab = lm.vocab_size if lm is not None else vocab_size
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 2:
        raise InvalidOption("detect needs lm (a loaded model) or vocab_size >= 2")
    token_lists = [check_tokens(t, vocab) for t in tokenize_texts(lm, texts)]
    if scheme == "kgw":
        return [kgw_detect(t, key=key, vocab_size=vocab, gamma=green_fraction) for t in token_lists]
    if scheme == "blackbox":
        return [blackbox_detect(t, key=key) for t in token_lists]
    stop_after = stop_after or 0
    for name, value, low, high in (("n", n, 1, MAX_N), ("resamples", resamples, 0, MAX_RESAMPLES),
                                   ("stop_after", stop_after, 0, MAX_RESAMPLES)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
            bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise InvalidOption(f"{name} must be an integer {bounds}, got {value!r}")
    if block is not None and (isinstance(block, bool) or not isinstance(block, int) or block < 1):
        raise InvalidOption(f"block must be a positive integer, got {block!r}")
    gap_cost = DEFAULT_GAP_COST[scheme] if gap_cost is None else float(gap_cost)
    if not math.isfinite(gap_cost) or gap_cost < 0:
        raise InvalidOption(f"gap_cost must be >= 0, got {gap_cost}")
    mode = align.EXP if scheme == "exp" else (align.ITS_EDIT if edit else align.ITS)
    tables = key_tables(scheme, key, n, vocab, token_lists)
    with detection_progress(len(token_lists), resamples, progress) as report:
        result = align.fast_test(token_lists, mode=mode, edit=edit, key_tables=tables, vocab_size=vocab, n=n,
                                 k=block, gap_cost=gap_cost, resamples=resamples, seed=seed,
                                 stop_after=stop_after or None, workers=workers, progress=report)
    name = scheme + ("-edit" if edit else "")
    return [Detection(float(p), float(s), len(t), name, int(r), int(h), bool(stop_after and h >= stop_after),
                      align.pvalue_bounds(int(h), int(r), resamples))
            for s, p, t, r, h in zip(*result[:2], token_lists, *result[2:])]


def key_tables(scheme: str, key: Any, n: int, vocab: int, token_lists: list[np.ndarray]) -> list[tuple]:
    """Per text: the key restricted to its distinct tokens, as `align` expects."""
    out = []
    if scheme == "exp":
        for tokens in token_lists:
            out.append((exp_key_columns(key, n, np.unique(tokens)), None, None))
    else:
        u, rank = its_key(key, n, vocab)
        for tokens in token_lists:
            out.append((None, u, rank[np.unique(tokens)] / (vocab - 1.0)))
    return out


def kgw_detect(tokens: np.ndarray, *, key: Any, vocab_size: int, gamma: float = 0.25) -> Detection:
    """z-score test of Kirchenbauer et al.: green count among distinct (previous, token) pairs."""
    if not 0 < gamma < 1:
        raise InvalidOption(f"green_fraction must be in (0, 1), got {gamma}")
    pairs = sorted({(int(a), int(b)) for a, b in zip(tokens[:-1], tokens[1:])})
    if not pairs:
        raise EmptyText("KGW detection needs at least 2 tokens")
    previous = torch.tensor([p for p, _ in pairs])
    current = torch.tensor([c for _, c in pairs])
    green = green_mask(key, previous, vocab_size, gamma).gather(-1, current[:, None]).squeeze(-1)
    count, total = int(green.sum()), len(pairs)
    z = (count - gamma * total) / math.sqrt(total * gamma * (1 - gamma))
    return Detection(float(stats.norm.sf(z)), float(z), len(tokens), "kgw")
