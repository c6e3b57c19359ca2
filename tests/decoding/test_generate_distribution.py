"""End to end: `dl.generate` samples from the exact processed distribution of the model.

The exact law is computed from the model's own logits (a plain forward, no cache) and the
independent NumPy reference in tests/oracle.py. Samples come from one
`dl.generate` call on a batch of identical prompts with one seed: row i draws its own stream,
so the rows are independent draws. EOS (id 0 in tiny-random) ends a row early, and penalties
see the tokens generated so far; the two-token enumeration handles both.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from oracle import reference_probs

import decodelab as dl
from decodelab.sampling.processors import TokenHistory

EOS = 0
N_ONE = 5_000  # rows for one-token tests
N_TWO = 6_000  # rows for two-token tests
N_CONTROL = 3_000  # rows for negative controls (their power is far larger than needed)


def next_logits(lm: dl.LM, contexts: list[list[int]]) -> np.ndarray:
    """Last-position logits of each context from a fresh forward (no KV cache), float64."""
    out = []
    with torch.inference_mode():
        for ids in contexts:
            out.append(lm.model(torch.tensor([ids])).logits[0, -1].double().numpy())
    return np.stack(out)


def sample_tokens(lm, prompt, n, seed, max_new_tokens, **options) -> list[list[int]]:
    outs = dl.generate(lm, [prompt] * n, max_new_tokens=max_new_tokens, seed=seed, records=False, **options)
    return [o.token_ids for o in outs]


def exact_one_token(lm, prompt, **cfg) -> np.ndarray:
    return reference_probs(next_logits(lm, [prompt])[0], prompt, [], **cfg)


def exact_two_tokens(lm, prompt, **cfg) -> np.ndarray:
    """Joint law of the continuation as a flat table over bins t1 * V + t2.

    A first token EOS ends the generation: its whole mass sits in bin EOS * V + 0.
    The second step's penalties see the first token as output.
    """
    vocab = lm.vocab_size
    first = exact_one_token(lm, prompt, **cfg)
    joint = np.zeros(vocab * vocab)
    joint[EOS * vocab] = first[EOS]
    seconds = next_logits(lm, [prompt + [t1] for t1 in range(vocab)])
    for t1 in range(vocab):
        if t1 == EOS or first[t1] == 0:
            continue
        joint[t1 * vocab : (t1 + 1) * vocab] = first[t1] * reference_probs(seconds[t1], prompt, [t1], **cfg)
    return joint


def two_token_bins(continuations: list[list[int]], vocab: int) -> np.ndarray:
    bins = []
    for ids in continuations:
        assert 1 <= len(ids) <= 2
        if ids[0] == EOS:
            assert len(ids) == 1, "EOS must end the row"
            bins.append(EOS * vocab)
        else:
            assert len(ids) == 2, "a row that did not emit EOS runs to max_new_tokens"
            bins.append(ids[0] * vocab + ids[1])
    return np.array(bins)


ONE_TOKEN_CONFIGS = {
    "temperature-0.6": dict(temperature=0.6),
    "temperature-1.6": dict(temperature=1.6),
    "top-k-3": dict(temperature=1.0, top_k=3),
    "top-p-0.7": dict(temperature=1.0, top_p=0.7),
    "min-p-0.15": dict(temperature=1.0, min_p=0.15),
    "typical-0.5": dict(temperature=1.0, typical_p=0.5),
    "epsilon-0.05": dict(temperature=1.0, epsilon_cutoff=0.05),
    "eta-0.05": dict(temperature=1.3, eta_cutoff=0.05),
    "repetition-1.8": dict(temperature=1.0, repetition_penalty=1.8),
    "logit-bias": dict(temperature=1.0, logit_bias={0: -2.0, 9: 3.0}),
}


def test_tiny_model_law_has_power(tiny_lm, tiny_prompt):
    """The fixture's next-token law is neither flat nor one-hot, and each config moves it."""
    plain = exact_one_token(tiny_lm, tiny_prompt)
    assert 0.2 < plain.max() < 0.8 and (plain > 0.02).sum() >= 4
    for name, cfg in ONE_TOKEN_CONFIGS.items():
        assert np.abs(exact_one_token(tiny_lm, tiny_prompt, **cfg) - plain).max() > 0.03, name


@pytest.mark.parametrize("name", list(ONE_TOKEN_CONFIGS))
def test_generate_first_token_matches_exact_distribution(name, tiny_lm, tiny_prompt, gof):
    cfg = ONE_TOKEN_CONFIGS[name]
    exact = exact_one_token(tiny_lm, tiny_prompt, **cfg)
    tokens = sample_tokens(tiny_lm, tiny_prompt, N_ONE, seed=11, max_new_tokens=1, **cfg)
    assert all(len(t) == 1 for t in tokens)
    samples = np.array([t[0] for t in tokens])
    assert set(np.unique(samples)) <= set(np.flatnonzero(exact > 0)), "a removed token was generated"
    gof.assert_matches(samples, exact, name)


def test_greedy_generate_is_the_argmax(tiny_lm, tiny_prompt):
    exact = exact_one_token(tiny_lm, tiny_prompt, temperature=0.0)
    tokens = sample_tokens(tiny_lm, tiny_prompt, 50, seed=3, max_new_tokens=1, temperature=0)
    assert {t[0] for t in tokens} == {int(np.argmax(exact))}


TWO_TOKEN_CONFIGS = {
    "temperature-top-k": dict(temperature=0.7, top_k=6),
    "top-p-penalties": dict(temperature=1.0, top_p=0.85, repetition_penalty=1.6, frequency_penalty=0.5,
                            presence_penalty=0.4),
    "min-p-hot": dict(temperature=1.4, min_p=0.08),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TWO_TOKEN_CONFIGS))
def test_generate_two_token_continuations_match_exact_joint(name, tiny_lm, tiny_prompt, gof):
    cfg = TWO_TOKEN_CONFIGS[name]
    exact = exact_two_tokens(tiny_lm, tiny_prompt, **cfg)
    assert 0.05 < exact[EOS * tiny_lm.vocab_size] < 0.6, "EOS must matter in this enumeration"
    bins = two_token_bins(sample_tokens(tiny_lm, tiny_prompt, N_TWO, seed=21, max_new_tokens=2, **cfg),
                          tiny_lm.vocab_size)
    gof.assert_matches(bins, exact, name)


@pytest.mark.slow
def test_penalty_blind_to_generated_tokens_is_detected(tiny_lm, tiny_prompt, gof, monkeypatch):
    """Negative control: a loop whose penalties forget the generated tokens (only the prompt
    counts) samples a different joint law, and the same test rejects it."""
    cfg = TWO_TOKEN_CONFIGS["top-p-penalties"]
    exact = exact_two_tokens(tiny_lm, tiny_prompt, **cfg)
    real_from_ids = TokenHistory.from_ids.__func__

    def forgetful(cls, prompt_ids, output_ids, vocab_size, device="cpu"):
        return real_from_ids(cls, prompt_ids, [[] for _ in output_ids], vocab_size, device)

    monkeypatch.setattr(TokenHistory, "from_ids", classmethod(forgetful))
    bins = two_token_bins(sample_tokens(tiny_lm, tiny_prompt, N_CONTROL, seed=21, max_new_tokens=2, **cfg),
                          tiny_lm.vocab_size)
    gof.assert_rejects(bins, exact, "penalties without output history")


@pytest.mark.slow
def test_temperature_ignored_in_generate_is_detected(tiny_lm, tiny_prompt, gof):
    """Negative control: draws at temperature 1 tested against the temperature-0.7 joint."""
    exact = exact_two_tokens(tiny_lm, tiny_prompt, **TWO_TOKEN_CONFIGS["temperature-top-k"])
    bins = two_token_bins(sample_tokens(tiny_lm, tiny_prompt, N_CONTROL, seed=22, max_new_tokens=2,
                                        temperature=1.0, top_k=6), tiny_lm.vocab_size)
    gof.assert_rejects(bins, exact, "temperature ignored")


def test_batch_rows_sharing_one_stream_is_detected(tiny_lm, tiny_prompt, gof, monkeypatch):
    """Negative control: if every row of a batch got the same generator seed, the rows would
    be copies of one draw; the distribution test must see that."""
    import importlib

    from decodelab.sampling.keyed import row_generators

    compose_path = importlib.import_module("decodelab.decoding.generate")  # the module, not the function

    monkeypatch.setattr(compose_path, "row_generators", lambda seed, rows, device="cpu": [
        row_generators(seed, 1)[0] for _ in range(rows)])
    exact = exact_one_token(tiny_lm, tiny_prompt, temperature=1.0)
    tokens = sample_tokens(tiny_lm, tiny_prompt, 2000, seed=5, max_new_tokens=1, temperature=1.0)
    gof.assert_rejects(np.array([t[0] for t in tokens]), exact, "one stream for all rows")


def test_batch_row_zero_equals_single_prompt_run(tiny_lm, tiny_prompt):
    """With a seed, row 0 of a batch draws the stream a single-prompt call draws; other rows
    draw their own (so identical prompts in a batch are independent samples)."""
    cfg = dict(temperature=1.2, max_new_tokens=6, records=False)
    for seed in range(2):
        single = dl.generate(tiny_lm, tiny_prompt, seed=seed, **cfg).token_ids
        batch = dl.generate(tiny_lm, [tiny_prompt] * 20, seed=seed, **cfg)
        assert batch[0].token_ids == single
        assert len({tuple(o.token_ids) for o in batch}) > 5
