"""Exact laws of constrained generation on tiny-random models, by enumeration.

For a prompt and a grammar, every token sequence the grammar allows (up to a length) is walked
with llguidance matchers and the model's processed next-token law. A sequence ends at EOS (only
allowed when the text is complete) or when the grammar cannot be extended (no EOS scored).

- local law (mask-then-sample): at each step p restricted to the allowed set, renormalised;
- global law: p(x) 1[x complete] / p(L), with p(x) the product of unrestricted probabilities.
"""

from __future__ import annotations

import torch

from decodelab.constrain.grammar import Grammar, fill_masks, masks_to_bool
from decodelab.sampling import SamplingConfig, process_logits


def next_probs(lm, ids: list[int], config: SamplingConfig) -> torch.Tensor:
    with torch.inference_mode():
        logits = lm.model(torch.tensor([ids])).logits[:, -1].float()
    return process_logits(logits, config).softmax(-1)[0].double()


def enumerate_laws(lm, prompt: list[int], grammar: Grammar, length: int, **sampler):
    """(local law, global law, p(L) within `length` tokens, first-step Z) as dicts over sequences."""
    config = SamplingConfig(**sampler)
    eos = lm.eos_token_ids
    local: dict[tuple[int, ...], float] = {}
    joint: dict[tuple[int, ...], float] = {}
    frontier = [((), 1.0, 1.0)]
    first_z = None
    for _ in range(length):
        nxt = []
        for prefix, mass_local, mass_joint in frontier:
            m = grammar.matcher()
            assert m.consume_tokens(list(prefix))
            allowed = masks_to_bool(fill_masks([(m, 0, [])], 1, grammar), grammar)[0]
            probs = next_probs(lm, prompt + list(prefix), config)
            z = float(probs[allowed].sum())
            if first_z is None:
                first_z = z
            for token in torch.nonzero(allowed & (probs > 0)).flatten().tolist():
                seq = prefix + (token,)
                ml, mj = mass_local * float(probs[token]) / z, mass_joint * float(probs[token])
                done = token in eos
                if not done:
                    m2 = grammar.matcher()
                    m2.consume_tokens(list(seq))
                    done = m2.is_stopped()
                if done:
                    local[seq] = local.get(seq, 0.0) + ml
                    joint[seq] = joint.get(seq, 0.0) + mj
                else:
                    nxt.append((seq, ml, mj))
        frontier = nxt
    total = sum(joint.values())
    return local, {s: p / total for s, p in joint.items()}, total, first_z


def total_variation(a: dict, b: dict) -> float:
    keys = set(a) | set(b)
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in keys)


def chi_square_pvalue(counts, law: dict) -> float:
    """Chi-square goodness of fit of sequence counts against an exact law (bins with expected
    count < 5 pooled); a sample outside the law's support gives 0."""
    import numpy as np
    from scipy import stats

    total = sum(counts.values())
    if any(seq not in law or law[seq] <= 0 for seq in counts):
        return 0.0
    obs, exp, pool_o, pool_e = [], [], 0.0, 0.0
    for seq, p in law.items():
        if p * total < 5:
            pool_o += counts.get(seq, 0)
            pool_e += p * total
        else:
            obs.append(counts.get(seq, 0))
            exp.append(p * total)
    if pool_e >= 5 or (pool_e > 0 and not exp):
        obs.append(pool_o)
        exp.append(pool_e)
    elif pool_e > 0:
        obs[-1] += pool_o
        exp[-1] += pool_e
    if len(obs) < 2:
        return 1.0
    exp_arr = np.array(exp) * (sum(obs) / sum(exp))
    return float(stats.chisquare(obs, exp_arr).pvalue)
