"""Independent NumPy reference for processed sampling distributions (float64).

Written from the papers' and Hugging Face's definitions, without calling decodelab, so tests
can compare decodelab's processors and its whole generation loop against it. See the
docstring of test_sampling_processors.py for the definitions.
"""

from __future__ import annotations

import math

import numpy as np


def softmax(x: np.ndarray) -> np.ndarray:
    finite = np.isfinite(x)
    z = np.where(finite, x - x[finite].max(), -np.inf)
    e = np.where(finite, np.exp(z), 0.0)
    return e / e.sum()


def entropy(p: np.ndarray) -> float:
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


def ref_logit_bias(x, bias):
    x = x.copy()
    for token, b in bias.items():
        x[token] += b
    return x


def ref_repetition(x, theta, prompt_ids, output_ids):
    x = x.copy()
    for token in set(prompt_ids) | set(output_ids):
        x[token] = x[token] * theta if x[token] < 0 else x[token] / theta
    return x


def ref_frequency_presence(x, freq, pres, output_ids):
    x = x.copy()
    counts = np.bincount(np.asarray(output_ids, dtype=int), minlength=len(x)) if output_ids else np.zeros(len(x))
    return x - freq * counts - pres * (counts > 0)


def ref_top_k(x, k):
    kth = np.sort(x)[::-1][min(k, len(x)) - 1]
    return np.where(x >= kth, x, -np.inf)


def ref_top_p(x, p):
    probs = softmax(x)
    order = np.argsort(-probs, kind="stable")
    before = np.concatenate([[0.0], np.cumsum(probs[order])[:-1]])  # mass strictly above each token
    keep = np.zeros(len(x), bool)
    keep[order[before < p]] = True  # include tokens until the mass reaches p (the crossing one too)
    return np.where(keep, x, -np.inf)


def ref_min_p(x, m):
    probs = softmax(x)
    return np.where(probs >= m * probs.max(), x, -np.inf)


def ref_typical(x, tau):
    probs = softmax(x)
    h = entropy(probs)
    with np.errstate(divide="ignore"):
        gap = np.abs(-np.log(probs) - h)
    order = np.argsort(gap, kind="stable")  # most typical first
    before = np.concatenate([[0.0], np.cumsum(probs[order])[:-1]])
    keep = np.zeros(len(x), bool)
    keep[order[before < tau]] = True
    return np.where(keep, x, -np.inf)


def ref_epsilon(x, eps):
    probs = softmax(x)
    keep = probs >= eps
    keep[np.argmax(x)] = True
    return np.where(keep, x, -np.inf)


def ref_eta(x, eps):
    probs = softmax(x)
    eta = min(eps, math.sqrt(eps) * math.exp(-entropy(probs)))
    keep = probs >= eta
    keep[np.argmax(x)] = True
    return np.where(keep, x, -np.inf)


def reference_probs(logits: np.ndarray, prompt_ids=(), output_ids=(), **cfg) -> np.ndarray:
    """The exact processed distribution, in Hugging Face's processor order."""
    x = np.asarray(logits, dtype=np.float64)
    prompt_ids, output_ids = list(prompt_ids), list(output_ids)
    if cfg.get("logit_bias"):
        x = ref_logit_bias(x, cfg["logit_bias"])
    if cfg.get("repetition_penalty"):
        x = ref_repetition(x, cfg["repetition_penalty"], prompt_ids, output_ids)
    if cfg.get("frequency_penalty") or cfg.get("presence_penalty"):
        x = ref_frequency_presence(x, cfg.get("frequency_penalty", 0), cfg.get("presence_penalty", 0), output_ids)
    t = cfg.get("temperature", 1.0)
    if t == 0:
        out = np.zeros(len(x))
        out[np.argmax(x)] = 1.0
        return out
    x = x / t
    if cfg.get("top_k"):
        x = ref_top_k(x, cfg["top_k"])
    if cfg.get("top_p") is not None:
        x = ref_top_p(x, cfg["top_p"])
    if cfg.get("min_p"):
        x = ref_min_p(x, cfg["min_p"])
    if cfg.get("typical_p") is not None:
        x = ref_typical(x, cfg["typical_p"])
    if cfg.get("epsilon_cutoff"):
        x = ref_epsilon(x, cfg["epsilon_cutoff"])
    if cfg.get("eta_cutoff"):
        x = ref_eta(x, cfg["eta_cutoff"])
    return softmax(x)
