"""Keyed randomness: KeyedNoise is uniform, deterministic, key- and context-sensitive, and
Gumbel-max with keyed noise samples the softmax; row_generators are reproducible per (seed, row).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from decodelab.sampling import KeyedNoise, draw_uniforms, key_to_int, row_generators, splitmix64

KS_PASS = 1e-4


def contexts(n: int, width: int, seed: int = 0, vocab: int = 50_000) -> torch.Tensor:
    return torch.randint(0, vocab, (n, width), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- uniformity
def test_keyed_uniform_is_uniform_over_vocabulary_and_contexts():
    u = KeyedNoise("secret").uniform(contexts(400, 3), 256).flatten().numpy()
    assert u.shape == (400 * 256,)
    assert np.all((u > 0) & (u < 1)), "uniforms must lie in the open interval (0, 1)"
    assert scipy.stats.kstest(u, "uniform").pvalue > KS_PASS


def test_keyed_uniform_is_uniform_along_one_context():
    """A single context over a large vocabulary: the index dimension alone must look uniform."""
    u = KeyedNoise(7).uniform(torch.tensor([11, 12]), 100_000).numpy()
    assert scipy.stats.kstest(u, "uniform").pvalue > KS_PASS


def test_keyed_uniform_bits_are_balanced():
    """Each of the 53 mantissa-feeding bits is set about half the time (a weak mixer fails this)."""
    bits = KeyedNoise("k").bits(contexts(200, 2), 500).flatten()
    top = ((bits >> 11) & ((1 << 53) - 1))
    for b in range(53):
        frac = float(((top >> b) & 1).double().mean())
        assert abs(frac - 0.5) < 5 * 0.5 / np.sqrt(top.numel()), f"bit {b}: {frac}"


def test_unmixed_noise_is_detected_by_the_uniformity_test():
    """Negative control: noise from (state XOR index) without the finaliser is far from uniform
    in the same KS test."""
    noise = KeyedNoise("secret")
    state = noise.hash_context(torch.tensor([11, 12]))
    raw = state ^ torch.arange(100_000)
    broken = (((raw >> 11) & ((1 << 53) - 1)).double() + 0.5) / float(1 << 53)
    assert scipy.stats.kstest(broken.numpy(), "uniform").pvalue < 1e-6


def test_keyed_gumbel_has_the_standard_gumbel_law():
    g = KeyedNoise("g").gumbel(contexts(200, 2), 500).flatten().numpy()
    assert scipy.stats.kstest(g, "gumbel_r").pvalue > KS_PASS
    assert abs(g.mean() - np.euler_gamma) < 0.02


# --------------------------------------------------------------------------- determinism
def test_keyed_noise_is_a_function_of_key_and_context():
    ctx = contexts(5, 4, seed=3)
    a = KeyedNoise("key").uniform(ctx, 64)
    b = KeyedNoise("key").uniform(ctx.clone(), 64)
    assert torch.equal(a, b)
    # each row depends on its own context only, not on the batch it is computed in
    assert torch.equal(KeyedNoise("key").uniform(ctx[2:3], 64), a[2:3])
    # a str key and its bytes give the same noise; the same int key twice too
    assert torch.equal(KeyedNoise(b"key").uniform(ctx, 64), a)
    assert torch.equal(KeyedNoise(5).uniform(ctx, 64), KeyedNoise(5).uniform(ctx, 64))
    # a prefix of the vocabulary is the same noise
    assert torch.equal(KeyedNoise("key").uniform(ctx, 16), a[:, :16])


def test_keyed_noise_batch_shapes():
    noise = KeyedNoise(1)
    assert noise.uniform(torch.zeros(2, 3, 4, dtype=torch.long), 10).shape == (2, 3, 10)
    assert noise.uniform(torch.zeros(0, dtype=torch.long), 10).shape == (10,)  # empty window: key alone
    assert noise.uniform(torch.zeros(1, 2, dtype=torch.long), 10, dtype=torch.float32).dtype == torch.float32


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


@pytest.mark.parametrize("other_key", ["key2", "Key", 0, b"key\x00"])
def test_different_keys_give_uncorrelated_streams(other_key):
    ctx = contexts(100, 3)
    a = KeyedNoise("key").uniform(ctx, 200)
    b = KeyedNoise(other_key).uniform(ctx, 200)
    assert not torch.equal(a, b)
    assert abs(_corr(a, b)) < 5 / np.sqrt(a.numel())
    assert float((a == b).double().mean()) == 0.0


def test_different_contexts_give_uncorrelated_streams():
    noise = KeyedNoise("key")
    ctx = contexts(100, 3)
    neighbours = {
        "last token +1": ctx + torch.tensor([0, 0, 1]),
        "first token +1": ctx + torch.tensor([1, 0, 0]),
        "order swapped": ctx[:, [1, 0, 2]],
        "shorter window": ctx[:, 1:],
    }
    a = noise.uniform(ctx, 200)
    for name, other in neighbours.items():
        b = noise.uniform(other, 200)
        assert abs(_corr(a, b)) < 5 / np.sqrt(a.numel()), name
    # neighbouring vocabulary indices are uncorrelated too
    assert abs(_corr(a[:, :-1], a[:, 1:])) < 5 / np.sqrt(a.numel())


def test_key_to_int_accepts_int_str_bytes_and_rejects_others():
    assert key_to_int("a") == key_to_int(b"a")
    assert 0 <= key_to_int(-5) < 2**63
    assert key_to_int(1) != key_to_int(2)
    assert key_to_int(2**300) != key_to_int(2**300 + 1)
    for bad in (1.5, None, True, ["a"]):
        with pytest.raises(TypeError):
            key_to_int(bad)


def test_splitmix64_matches_the_reference_constants():
    """First outputs of SplitMix64 seeded with 0 (Steele et al.; the standard test vector):
    state advances by the golden gamma, each output is the finaliser of the state."""
    expected = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    gamma = 0x9E3779B97F4A7C15
    states = [(gamma * i) % 2**64 for i in range(3)]  # splitmix64 adds gamma itself
    signed = [s - 2**64 if s >= 2**63 else s for s in states]
    out = splitmix64(torch.tensor(signed, dtype=torch.long)).tolist()
    assert [o % 2**64 for o in out] == expected


# --------------------------------------------------------------------------- Gumbel-max
def _gumbel_max_samples(logits: torch.Tensor, n: int, key, scale: float = 1.0) -> np.ndarray:
    noise = KeyedNoise(key).gumbel(contexts(n, 4, seed=9), logits.shape[-1])
    return (logits.double() * scale + noise).argmax(-1).numpy()


LOGITS = torch.tensor([2.0, 1.2, 0.9, 0.1, -0.3, -1.0, -1.5, -2.2, 0.5, -0.7])


def test_keyed_gumbel_max_samples_the_softmax(gof):
    samples = _gumbel_max_samples(LOGITS, 30_000, "gm")
    gof.assert_matches(samples, LOGITS.double().softmax(-1).numpy(), "Gumbel-max")


def test_broken_gumbel_max_is_detected(gof):
    """Negative control: logits halved (a temperature bug) before adding the keyed noise."""
    samples = _gumbel_max_samples(LOGITS, 30_000, "gm", scale=0.5)
    gof.assert_rejects(samples, LOGITS.double().softmax(-1).numpy(), "Gumbel-max at wrong temperature")


# --------------------------------------------------------------------------- row generators
def test_row_generators_are_reproducible_per_seed_and_row():
    a = draw_uniforms(row_generators(42, 6))
    b = draw_uniforms(row_generators(42, 6))
    assert torch.equal(a, b)
    # row i's stream depends on (seed, i) only, not on the batch size
    assert torch.equal(draw_uniforms(row_generators(42, 10))[:6], a)
    # a later draw continues each row's stream
    gens = row_generators(42, 3)
    first, second = draw_uniforms(gens), draw_uniforms(gens)
    assert not torch.equal(first, second)
    again = row_generators(42, 3)
    draw_uniforms(again)
    assert torch.equal(draw_uniforms(again), second)
    # selecting rows draws from those rows only
    gens = row_generators(42, 6)
    assert torch.equal(draw_uniforms(gens, [1, 4]), a[[1, 4]])


def test_row_generators_differ_across_seeds_and_rows():
    a = draw_uniforms(row_generators(1, 2000))
    b = draw_uniforms(row_generators(2, 2000))
    assert len(set(a.tolist())) == 2000
    assert abs(_corr(a, b)) < 5 / np.sqrt(2000)
    assert abs(_corr(a[:-1], a[1:])) < 5 / np.sqrt(2000)  # neighbouring rows independent
    assert scipy.stats.kstest(a.numpy(), "uniform").pvalue > KS_PASS


def test_row_generators_without_seed_vary():
    assert not torch.equal(draw_uniforms(row_generators(None, 4)), draw_uniforms(row_generators(None, 4)))
