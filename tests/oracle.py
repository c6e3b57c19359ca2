"""The tests' one oracle: exact laws of tiny models and goodness of fit against samples.

1. Per-step reference law (`reference_probs` and the `ref_*` processors): NumPy, float64, written
   from the papers' and Hugging Face's definitions without calling decodelab, so tests can compare
   decodelab's processors and its whole generation loop against it. See the docstring of
   tests/sampling/test_sampling_processors.py for the definitions.
2. Continuation laws by enumeration (`exact_continuations`, `enumerate_laws`): every continuation
   of a few tokens of a tiny model, walked with the model's processed next-token law; optionally
   under a logit mask or a grammar (llguidance matchers). A sequence ends at EOS, when a grammar
   cannot be extended, or at the length limit (without a grammar).
3. Goodness of fit (`chi_square_pvalue`, `total_variation`) and `sample_continuations`.

Import it as `oracle` from any test module (tests/ is on sys.path: the root conftest.py lives there).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import scipy.stats
import torch

# ---------------------------------------------------------------------------------------------
# 1. Per-step reference law (independent of decodelab)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# 2. Continuation laws by enumeration
# ---------------------------------------------------------------------------------------------


def next_token_probs(lm, prompt: list[int], prefix: tuple[int, ...], config, logit_mask=None) -> torch.Tensor:
    """The processed next-token law (float64) after prompt + prefix, from a fresh forward; a boolean
    `logit_mask` [V] removes tokens before processing (a constraint applied to the logits)."""
    from decodelab.sampling import TokenHistory, process_logits

    with torch.inference_mode():
        logits = lm.model(torch.tensor([prompt + list(prefix)])).logits[:, -1].float()
    if logit_mask is not None:
        logits = logits.masked_fill(~logit_mask, float("-inf"))
    history = TokenHistory.from_ids([prompt], [list(prefix)], lm.vocab_size)
    return process_logits(logits, config, history).softmax(-1)[0].double()


def enumerate_laws(lm, prompt: list[int], grammar, length: int, *, logit_mask=None, keep_incomplete: bool = False,
                   **sampler):
    """(local law, global law, p(L) within `length` tokens, first-step Z), dicts over sequences.

    With a grammar, the local law is mask-then-sample (at each step p restricted to the allowed set,
    renormalised) and the global law is p(x) 1[x complete] / p(L), with p(x) the product of
    unrestricted probabilities; sequences still incomplete after `length` tokens are dropped.
    With grammar=None both laws are the plain continuation law, whose sequences end at EOS or
    after `length` tokens. `keep_incomplete=True` keeps the local law's sequences that are still
    running after `length` tokens (the law of what `generate(max_new_tokens=length)` returns).
    """
    from decodelab.constrain.grammar import fill_masks, masks_to_bool
    from decodelab.sampling import SamplingConfig

    config = SamplingConfig(**sampler)
    eos = lm.eos_token_ids
    local: dict[tuple[int, ...], float] = {}
    joint: dict[tuple[int, ...], float] = {}
    frontier = [((), 1.0, 1.0)]
    first_z = None
    for _ in range(length):
        nxt = []
        for prefix, mass_local, mass_joint in frontier:
            probs = next_token_probs(lm, prompt, prefix, config, logit_mask)
            if grammar is None:
                allowed, z = torch.ones_like(probs, dtype=torch.bool), 1.0
            else:
                m = grammar.matcher()
                assert m.consume_tokens(list(prefix))
                allowed = masks_to_bool(fill_masks([(m, 0, [])], 1, grammar), grammar)[0]
                z = float(probs[allowed].sum())
            if first_z is None:
                first_z = z
            for token in torch.nonzero(allowed & (probs > 0)).flatten().tolist():
                seq = prefix + (token,)
                ml, mj = mass_local * float(probs[token]) / z, mass_joint * float(probs[token])
                done = token in eos
                if not done and grammar is not None:
                    m2 = grammar.matcher()
                    m2.consume_tokens(list(seq))
                    done = m2.is_stopped()
                if done:
                    local[seq] = local.get(seq, 0.0) + ml
                    joint[seq] = joint.get(seq, 0.0) + mj
                else:
                    nxt.append((seq, ml, mj))
        frontier = nxt
    if grammar is None or keep_incomplete:  # the length limit ends the continuation
        for seq, mass_local, mass_joint in frontier:
            local[seq] = local.get(seq, 0.0) + mass_local
            joint[seq] = joint.get(seq, 0.0) + mass_joint
    total = sum(joint.values())
    return local, {s: p / total for s, p in joint.items()}, total, first_z


def exact_continuations(lm, prompt: list[int], length: int, *, logit_mask=None,
                        **sampler) -> dict[tuple[int, ...], float]:
    """P(continuation) for every continuation of `length` tokens (shorter if it ends in EOS)."""
    return enumerate_laws(lm, prompt, None, length, logit_mask=logit_mask, **sampler)[0]


# ---------------------------------------------------------------------------------------------
# 3. Sampling and goodness of fit
# ---------------------------------------------------------------------------------------------


def sample_continuations(lm, prompt: list[int], length: int, samples: int, *, seed: int, batch: int = 4000,
                         **generate_options) -> Counter:
    """Continuations drawn with dl.generate over batches of identical prompts (row i has its own stream)."""
    import decodelab as dl

    counts: Counter = Counter()
    for start in range(0, samples, batch):
        rows = min(batch, samples - start)
        outs = dl.generate(lm, [prompt] * rows, max_new_tokens=length, seed=seed + start, records=False,
                           **generate_options)
        counts.update(tuple(o.token_ids) for o in outs)
    return counts


def chi_square_pvalue(observed, expected, *, min_expected: float = 5.0) -> float:
    """Chi-square goodness-of-fit p-value of counts against an exact law: arrays (counts per bin,
    probabilities per bin) or a Counter of sequences against a dict law over sequences.

    Bins with expected count below `min_expected` are pooled into one bin (merged into the smallest
    kept bin if the pool itself is still that small). A sample outside the law's support is an
    impossible outcome and gives p = 0.
    """
    if isinstance(expected, dict):
        if any(seq not in expected for seq in observed):
            return 0.0
        bins = list(expected)
        observed, expected = [observed.get(seq, 0) for seq in bins], [expected[seq] for seq in bins]
    observed = np.asarray(observed, dtype=np.float64).ravel()
    probs = np.asarray(expected, dtype=np.float64).ravel()
    if observed.shape != probs.shape:
        raise ValueError("observed and expected must have the same number of bins")
    if np.any((probs <= 0) & (observed > 0)):
        return 0.0
    probs = probs / probs.sum()
    n = observed.sum()
    expected = probs * n
    big = expected >= min_expected
    obs = list(observed[big])
    exp = list(expected[big])
    pooled_exp = expected[~big].sum()
    pooled_obs = observed[~big].sum()
    if pooled_exp >= min_expected:
        obs.append(pooled_obs)
        exp.append(pooled_exp)
    elif pooled_exp > 0 and obs:  # still too small: merge into the smallest kept bin
        smallest = int(np.argmin(exp))
        obs[smallest] += pooled_obs
        exp[smallest] += pooled_exp
    if len(obs) < 2:
        return 1.0  # a single bin carries no information (all mass on one outcome)
    return float(scipy.stats.chisquare(obs, exp).pvalue)


def total_variation(a: dict, b: dict) -> float:
    keys = set(a) | set(b)
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in keys)
