"""Each sampler's processed distribution equals an independent reference, and sampling draws from it.

The reference below is written in NumPy (float64) from the papers' / Hugging Face's definitions,
not by calling decodelab's processors:

- temperature: softmax(x / T)
- top-k (Fan et al. 2018): keep tokens whose logit is >= the k-th largest
- top-p (Holtzman et al. 2020): the smallest set of most likely tokens whose mass reaches p,
  i.e. the token that crosses p is kept
- min-p (Nguyen et al. 2024): keep p_i >= min_p * max_j p_j
- locally typical (Meister et al. 2023): rank tokens by |-log p_i - H(p)|, keep the smallest
  prefix of that ranking whose mass reaches tau
- epsilon (Hewitt et al. 2022): keep p_i >= eps, and always the most likely token
- eta (Hewitt et al. 2022): keep p_i >= min(eps, sqrt(eps) * exp(-H(p))), and always the top
- repetition penalty (Keskar et al. 2019, HF semantics): for tokens seen in prompt or output,
  x -> x * theta if x < 0 else x / theta
- frequency / presence penalty (OpenAI semantics): x - f * count_out - p * [count_out > 0]
- logit bias: x + b
- greedy: one-hot on the argmax

Order (as in HF): bias, repetition, frequency/presence, temperature, top-k, top-p, min-p,
typical, epsilon, eta.

Every law is tested three ways: exact equality of `processed_probs` with the reference (1e-6),
the support (removed tokens are never drawn), and a chi-square test of many draws through the
real sampling path (`sample_from_probs` with uniforms from `row_generators`). Negative controls
draw from deliberately broken variants through the same path and must be rejected.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from oracle import entropy, ref_epsilon, ref_top_k, reference_probs, softmax

from decodelab.sampling import (
    SamplingConfig,
    TokenHistory,
    draw_uniforms,
    processed_probs,
    row_generators,
    sample_from_probs,
)

V = 16
N_SAMPLES = 20_000

# Three logit rows over 16 tokens, in a scrambled order so that sorting matters:
# a peaked row, a nearly flat row and a bimodal row with a long tail. No ties, and no
# threshold used below falls within 1e-3 of a boundary (checked by test_reference_is_not_on_a_knife_edge).
_PERM = np.array([5, 12, 0, 9, 14, 3, 7, 1, 15, 10, 2, 8, 13, 6, 11, 4])
PEAKED = np.array([4.0, 2.6, 2.1, 1.3, 0.9, 0.45, 0.1, -0.35, -0.8, -1.05, -1.5, -2.05, -2.6, -3.1, -4.0, -5.2])[_PERM]
FLAT = np.linspace(0.55, -0.6, V)[np.argsort(_PERM)] + np.array([0.013 * i for i in range(V)])
BIMODAL = np.array([3.0, 2.85, 0.7, 0.35, 0.0, -0.4, -0.7, -1.0, -1.3, -1.7, -2.1, -2.4, -2.9, -3.3, -3.8, -4.5])[_PERM[::-1]]
ROWS = {"peaked": PEAKED, "flat": FLAT, "bimodal": BIMODAL}

# Penalty history: what the prompt contained and what was generated so far.
PROMPT_IDS = [int(_PERM[0]), int(_PERM[3]), int(_PERM[12]), int(_PERM[15])]  # high, mid, low logits
OUTPUT_IDS = [int(_PERM[1]), int(_PERM[1]), int(_PERM[1]), int(_PERM[8]), int(_PERM[14])]


# --------------------------------------------------------------------------- the cases
CONFIGS = {
    "temperature-0.5": dict(temperature=0.5),
    "temperature-2": dict(temperature=2.0),
    "top-k-1": dict(top_k=1),
    "top-k-3": dict(top_k=3),
    "top-k-7-temperature-0.7": dict(top_k=7, temperature=0.7),
    "top-p-0.5": dict(top_p=0.5),
    "top-p-0.8": dict(top_p=0.8),
    "top-p-0.95": dict(top_p=0.95),
    "min-p-0.05": dict(min_p=0.05),
    "min-p-0.3": dict(min_p=0.3),
    "typical-0.3": dict(typical_p=0.3),
    "typical-0.7": dict(typical_p=0.7),
    "typical-0.9": dict(typical_p=0.9),
    "epsilon-0.03": dict(epsilon_cutoff=0.03),
    "epsilon-0.12": dict(epsilon_cutoff=0.12),
    "eta-0.02": dict(eta_cutoff=0.02),
    "eta-0.2": dict(eta_cutoff=0.2),
    "repetition-1.5": dict(repetition_penalty=1.5),
    "repetition-0.7": dict(repetition_penalty=0.7),
    "frequency-0.6": dict(frequency_penalty=0.6),
    "presence-1.1": dict(presence_penalty=1.1),
    "frequency-presence-negative": dict(frequency_penalty=-0.4, presence_penalty=0.9),
    "logit-bias": dict(logit_bias={int(_PERM[5]): 3.0, int(_PERM[0]): -100.0, int(_PERM[14]): 6.5}),
    "greedy": dict(temperature=0.0),
    "greedy-with-penalty": dict(temperature=0.0, repetition_penalty=4.0, logit_bias={int(_PERM[2]): 1.0}),
    "mixed-t-k-p": dict(temperature=0.8, top_k=9, top_p=0.85),
    "mixed-penalties-min-p": dict(temperature=1.3, repetition_penalty=1.3, frequency_penalty=0.3, min_p=0.08),
    "mixed-bias-typical-eta": dict(logit_bias={int(_PERM[9]): 2.0}, typical_p=0.8, eta_cutoff=0.05),
}


def history(rows: int) -> TokenHistory:
    return TokenHistory.from_ids([PROMPT_IDS] * rows, [OUTPUT_IDS] * rows, V)


def decodelab_probs(logits: np.ndarray, cfg: dict) -> np.ndarray:
    config = SamplingConfig(**cfg)
    out = processed_probs(torch.tensor(logits, dtype=torch.float32)[None], config, history(1))
    return out[0].double().numpy()


_GENERATORS: dict[int, list[torch.Generator]] = {}


def draw(probs: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n draws from probs through the real path: one row per draw, each with its own stream.

    Generators are made once per (seed, n) and reused: a later call continues each row's
    stream, which is what a multi-step generation does too.
    """
    if (seed, n) not in _GENERATORS:
        _GENERATORS[seed, n] = row_generators(seed, n)
    table = torch.tensor(np.asarray(probs), dtype=torch.float32)[None].expand(n, -1)
    uniforms = draw_uniforms(_GENERATORS[seed, n])
    return sample_from_probs(table, uniforms).numpy()


CASES = [(c, r) for c in CONFIGS for r in ROWS]


# --------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("config_name,row_name", CASES)
def test_processed_probs_equal_independent_reference(config_name, row_name):
    cfg, logits = CONFIGS[config_name], ROWS[row_name]
    ours = decodelab_probs(logits, cfg)
    ref = reference_probs(logits, PROMPT_IDS, OUTPUT_IDS, **cfg)
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)
    # the support is exactly the reference's: removed tokens have probability exactly 0
    # (a -100 logit bias may underflow float32 to 0, hence the 1e-30 floor on the kept side)
    assert np.all(ours[ref == 0] == 0)
    assert np.all(ours[ref > 1e-30] > 0)


def test_reference_is_not_on_a_knife_edge():
    """Shift every row by tiny noise: a threshold that sits on a boundary would flip the support."""
    rng = np.random.default_rng(0)
    for cfg in CONFIGS.values():
        for logits in ROWS.values():
            base = reference_probs(logits, PROMPT_IDS, OUTPUT_IDS, **cfg) > 0
            for _ in range(5):
                jitter = logits + rng.uniform(-1e-4, 1e-4, V)
                assert np.array_equal(reference_probs(jitter, PROMPT_IDS, OUTPUT_IDS, **cfg) > 0, base), cfg


def test_every_truncation_case_removes_and_keeps_something():
    """The cases have power: each truncating processor removes tokens on some row and keeps
    more than one token on some row (otherwise the test would not exercise the boundary)."""
    truncating = [n for n in CONFIGS if n.split("-")[0] in {"top", "min", "typical", "epsilon", "eta"}]
    for name in truncating:
        supports = [int((reference_probs(r, PROMPT_IDS, OUTPUT_IDS, **CONFIGS[name]) > 0).sum()) for r in ROWS.values()]
        assert min(supports) < V, f"{name} never removes a token: {supports}"
        if name != "top-k-1":
            assert max(supports) > 1, f"{name} always keeps one token: {supports}"


def test_processors_change_the_distribution():
    """Sanity of the cases: each non-trivial config moves the law away from plain softmax."""
    for name, cfg in CONFIGS.items():
        moved = max(
            np.abs(reference_probs(r, PROMPT_IDS, OUTPUT_IDS, **cfg) - softmax(r)).max() for r in ROWS.values()
        )
        assert moved > 0.02, f"{name} does not change any row"


def test_batched_rows_are_processed_independently():
    """Processing a [3, V] batch with per-row histories equals processing each row alone."""
    logits = torch.tensor(np.stack(list(ROWS.values())), dtype=torch.float32)
    prompts = [PROMPT_IDS, [], [2, 3]]
    outputs = [OUTPUT_IDS, [7, 7], []]
    hist = TokenHistory.from_ids(prompts, outputs, V)
    cfg = CONFIGS["mixed-penalties-min-p"]
    ours = processed_probs(logits, SamplingConfig(**cfg), hist).double().numpy()
    for i, logits_row in enumerate(ROWS.values()):
        np.testing.assert_allclose(ours[i], reference_probs(logits_row, prompts[i], outputs[i], **cfg), atol=1e-6)


# --------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("config_name,row_name", CASES)
def test_sampling_matches_exact_distribution(config_name, row_name, gof):
    """Draws through sample_from_probs + row_generators follow the exact processed law, and
    never land on a removed token (a sample outside the support gives p = 0)."""
    cfg, logits = CONFIGS[config_name], ROWS[row_name]
    samples = draw(decodelab_probs(logits, cfg), N_SAMPLES, seed=1000)
    ref = reference_probs(logits, PROMPT_IDS, OUTPUT_IDS, **cfg)
    assert set(np.unique(samples)) <= set(np.flatnonzero(ref > 0)), "a removed token was sampled"
    gof.assert_matches(samples, ref, f"{config_name}/{row_name}")


def test_temperature_sampling_matches_exact_distribution(gof):
    ref = reference_probs(PEAKED, temperature=0.6)
    gof.assert_matches(draw(decodelab_probs(PEAKED, dict(temperature=0.6)), 50_000, seed=1), ref)


def test_top_p_sampling_matches_exact_distribution(gof):
    ref = reference_probs(BIMODAL, top_p=0.8)
    gof.assert_matches(draw(decodelab_probs(BIMODAL, dict(top_p=0.8)), 50_000, seed=2), ref)


def test_sample_from_probs_uses_each_uniform_as_an_inverse_cdf():
    """Deterministic check of the inverse-CDF draw at chosen uniforms (zero-mass tokens skipped)."""
    probs = torch.tensor([[0.0, 0.25, 0.0, 0.5, 0.25, 0.0]])
    u = torch.tensor([0.0, 0.2499, 0.25, 0.7499, 0.75, 0.999999], dtype=torch.float64)
    tokens = sample_from_probs(probs.expand(6, -1), u).tolist()
    assert tokens == [1, 1, 3, 3, 4, 4]


def test_sample_from_probs_accepts_unnormalised_rows():
    probs = torch.tensor([[2.0, 0.0, 6.0]])
    u = torch.tensor([0.24, 0.26], dtype=torch.float64)
    assert sample_from_probs(probs.expand(2, -1), u).tolist() == [0, 2]


# --------------------------------------------------------------------------- negative controls
def _broken_top_p_exclusive(x, p):
    """Bug: stops *before* the token that crosses p (so the kept mass can fall short of p)."""
    probs = softmax(x)
    order = np.argsort(-probs)
    through = np.cumsum(probs[order])
    keep = np.zeros(len(x), bool)
    keep[order[through <= p]] = True
    keep[order[0]] = True
    return softmax(np.where(keep, x, -np.inf))


def _broken_typical_descending(x, tau):
    """Bug: ranks the *least* typical tokens first."""
    probs = softmax(x)
    gap = np.abs(-np.log(probs) - entropy(probs))
    order = np.argsort(-gap)
    before = np.concatenate([[0.0], np.cumsum(probs[order])[:-1]])
    keep = np.zeros(len(x), bool)
    keep[order[before < tau]] = True
    return softmax(np.where(keep, x, -np.inf))


def _broken_repetition_everywhere(x, theta):
    """Bug: penalises every token, not only those seen in the prompt or output."""
    return softmax(np.where(x < 0, x * theta, x / theta))


def _broken_min_p_absolute(x, m):
    """Bug: compares p_i with min_p itself instead of min_p * max p."""
    probs = softmax(x)
    return softmax(np.where(probs >= m, x, -np.inf))


def _broken_presence_counts_prompt(x, pres):
    """Bug: presence penalty also hits tokens that only occur in the prompt."""
    seen = np.zeros(len(x), bool)
    seen[PROMPT_IDS + OUTPUT_IDS] = True
    return softmax(x - pres * seen)


NEGATIVE_CONTROLS = {
    "top-p-exclusive-cut": (BIMODAL, dict(top_p=0.8), lambda x: _broken_top_p_exclusive(x, 0.8)),
    "temperature-ignored": (PEAKED, dict(temperature=0.5), softmax),
    "top-k-off-by-one": (FLAT, dict(top_k=7), lambda x: softmax(ref_top_k(x, 6))),
    "typical-wrong-sort-order": (FLAT, dict(typical_p=0.7), lambda x: _broken_typical_descending(x, 0.7)),
    "repetition-on-unseen-tokens": (PEAKED, dict(repetition_penalty=1.5), lambda x: _broken_repetition_everywhere(x, 1.5)),
    "min-p-not-scaled-by-max": (PEAKED, dict(min_p=0.05), lambda x: _broken_min_p_absolute(x, 0.05)),
    "presence-on-prompt-tokens": (FLAT, dict(presence_penalty=1.1), lambda x: _broken_presence_counts_prompt(x, 1.1)),
    "eta-without-entropy-term": (FLAT, dict(eta_cutoff=0.2), lambda x: softmax(ref_epsilon(x, 0.2))),
}


@pytest.mark.parametrize("bug", list(NEGATIVE_CONTROLS))
def test_broken_sampler_is_detected(bug, gof):
    """The same chi-square test, on draws from a broken variant, rejects it (p < 1e-6)."""
    logits, cfg, broken = NEGATIVE_CONTROLS[bug]
    ref = reference_probs(logits, PROMPT_IDS, OUTPUT_IDS, **cfg)
    broken_probs = broken(logits)
    assert not np.allclose(broken_probs, ref, atol=1e-3), "the broken variant must differ from the reference"
    samples = draw(broken_probs, N_SAMPLES, seed=7)
    gof.assert_rejects(samples, ref, bug)


def test_broken_top_p_is_detected(gof):
    ref = reference_probs(BIMODAL, top_p=0.8)
    gof.assert_rejects(draw(_broken_top_p_exclusive(BIMODAL, 0.8), N_SAMPLES, seed=3), ref)


def test_shared_uniform_across_rows_is_detected(gof):
    """Bug: every row reuses one uniform (one generator for the batch instead of one per row)."""
    probs = decodelab_probs(PEAKED, dict(temperature=1.0))
    u = draw_uniforms(row_generators(5, 1)).expand(N_SAMPLES)
    samples = sample_from_probs(torch.tensor(probs, dtype=torch.float32)[None].expand(N_SAMPLES, -1), u).numpy()
    gof.assert_rejects(samples, reference_probs(PEAKED), "shared uniform")
