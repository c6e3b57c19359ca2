"""Exact continuation distributions by enumeration, and a chi-square test against samples."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import torch
from scipy import stats

import decodelab as dl
from decodelab.sampling import SamplingConfig, TokenHistory, process_logits


def exact_continuations(lm, prompt_ids: list[int], length: int, **sampler) -> dict[tuple[int, ...], float]:
    """P(continuation) for every continuation of `length` tokens (shorter if it ends in EOS)."""
    config = SamplingConfig(**sampler)
    eos = lm.eos_token_ids
    out: dict[tuple[int, ...], float] = {}
    frontier = [((), 1.0)]
    for _ in range(length):
        nxt = []
        for prefix, mass in frontier:
            ids = torch.tensor([prompt_ids + list(prefix)])
            with torch.inference_mode():
                logits = lm.model(ids).logits[:, -1].float()
            history = TokenHistory.from_ids([prompt_ids], [list(prefix)], lm.vocab_size)
            probs = process_logits(logits, config, history).softmax(-1)[0].double().numpy()
            for token in np.flatnonzero(probs > 0):
                seq = prefix + (int(token),)
                if int(token) in eos:
                    out[seq] = out.get(seq, 0.0) + mass * probs[token]
                else:
                    nxt.append((seq, mass * probs[token]))
        frontier = nxt
    for seq, mass in frontier:
        out[seq] = out.get(seq, 0.0) + mass
    return out


def sample_continuations(lm, prompt_ids: list[int], length: int, samples: int, *, seed: int, batch: int = 4000,
                         **generate_options) -> Counter:
    """Continuations drawn with dl.generate over batches of identical prompts (row i has its own stream)."""
    counts: Counter = Counter()
    for start in range(0, samples, batch):
        rows = min(batch, samples - start)
        outs = dl.generate(lm, [prompt_ids] * rows, max_new_tokens=length, seed=seed + start, records=False,
                           **generate_options)
        counts.update(tuple(o.token_ids) for o in outs)
    return counts


def chi_square_pvalue(counts: Counter, exact: dict[tuple[int, ...], float]) -> float:
    """Goodness of fit; bins with expected count < 5 are pooled; unseen-support draws fail outright."""
    total = sum(counts.values())
    if any(seq not in exact for seq in counts):
        return 0.0
    observed, expected = [], []
    pooled_o = pooled_e = 0.0
    for seq, p in exact.items():
        e = p * total
        if e < 5:
            pooled_o += counts.get(seq, 0)
            pooled_e += e
        else:
            observed.append(counts.get(seq, 0))
            expected.append(e)
    if pooled_e > 0:
        observed.append(pooled_o)
        expected.append(pooled_e)
    expected = np.array(expected) * (sum(observed) / sum(expected))
    return float(stats.chisquare(observed, expected).pvalue)


__all__ = ["exact_continuations", "sample_continuations", "chi_square_pvalue", "itertools"]
