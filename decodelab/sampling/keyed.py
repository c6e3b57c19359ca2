"""Keyed randomness: uniform and Gumbel noise that is a pure function of (key, context, index).

Watermarks, counterfactual decoding and sampling without replacement all need noise that can
be *recomputed* later from a secret key and the visible context, not drawn from a stateful
generator. `KeyedNoise` hashes the key, a window of preceding token ids and the vocabulary
index with SplitMix64 (Steele, Lea & Flood, 2014), vectorised on int64 tensors, so one call
gives a whole [..., V] noise tensor without a Python loop.

`row_generators` gives the other kind: seeded `torch.Generator`s, one per batch row, for
ordinary reproducible sampling.
"""

from __future__ import annotations

import hashlib

import torch

_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def _signed(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical (unsigned) right shift on int64."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser on an int64 tensor (wrapping arithmetic)."""
    z = x + _signed(_GOLDEN)
    z = (z ^ _shift_right(z, 30)) * _signed(_MIX1)
    z = (z ^ _shift_right(z, 27)) * _signed(_MIX2)
    return z ^ _shift_right(z, 31)


def key_to_int(key: int | str | bytes) -> int:
    """A 63-bit integer from an int, a string or bytes key."""
    if isinstance(key, bool) or not isinstance(key, (int, str, bytes)):
        raise TypeError("a key is an int, a str or bytes")
    if isinstance(key, int):
        raw = key.to_bytes(32, "little", signed=True) if -(1 << 255) <= key < 1 << 255 else str(key).encode()
    else:
        raw = key.encode() if isinstance(key, str) else key
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "little") & ((1 << 63) - 1)


class KeyedNoise:
    """Noise determined by a key and a context of token ids.

    Example:
        >>> import torch
        >>> noise = KeyedNoise("secret")
        >>> u = noise.uniform(torch.tensor([[5, 7, 9]]), 10)   # [1, 10] in (0, 1)
        >>> bool((u == noise.uniform(torch.tensor([[5, 7, 9]]), 10)).all())
        True
    """

    def __init__(self, key: int | str | bytes):
        self.key = key_to_int(key)

    def hash_context(self, context: torch.Tensor) -> torch.Tensor:
        """One int64 per context row: context [..., w] -> [...]. An empty window hashes the key alone."""
        context = torch.as_tensor(context, dtype=torch.long)
        state = torch.full(context.shape[:-1], self.key, dtype=torch.long, device=context.device)
        for j in range(context.shape[-1]):
            state = splitmix64(state ^ splitmix64(context[..., j] + j))
        return state

    def bits(self, context: torch.Tensor, size: int) -> torch.Tensor:
        """Raw 64-bit hashes [..., size] for indices 0..size-1 under each context."""
        return self.bits_at(context, torch.arange(size, dtype=torch.long))

    def bits_at(self, context: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Raw 64-bit hashes [..., len(index)] for the given vocabulary indices only (each index
        is hashed independently, so these equal the matching columns of `bits`)."""
        state = self.hash_context(context)
        index = torch.as_tensor(index, dtype=torch.long).to(state.device)
        return splitmix64(state[..., None] ^ splitmix64(index + _signed(_GOLDEN)))

    def uniform(self, context: torch.Tensor, size: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Uniform noise in the open interval (0, 1), shape [..., size]."""
        return self.uniform_at(context, torch.arange(size, dtype=torch.long), dtype)

    def uniform_at(self, context: torch.Tensor, index: torch.Tensor, dtype: torch.dtype = torch.float64,
                   ) -> torch.Tensor:
        """`uniform(context, V)[..., index]` without computing the other columns.

        Example:
            >>> import torch
            >>> noise = KeyedNoise(7)
            >>> ctx = torch.tensor([[1, 2]])
            >>> bool((noise.uniform_at(ctx, torch.tensor([3, 0])) == noise.uniform(ctx, 5)[:, [3, 0]]).all())
            True
        """
        top53 = _shift_right(self.bits_at(context, index), 11).to(torch.float64)
        return ((top53 + 0.5) / float(1 << 53)).to(dtype)

    def gumbel(self, context: torch.Tensor, size: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Standard Gumbel noise, -log(-log U), shape [..., size]."""
        return -torch.log(-torch.log(self.uniform(context, size))).to(dtype)


def row_generators(seed: int | None, rows: int, device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One seeded generator per batch row; row i draws its own stream from (seed, i).

    With seed None each generator is seeded from the global torch RNG, so results vary run to run.
    """
    gens = []
    for row in range(rows):
        gen = torch.Generator(device=device)
        if seed is None:
            gen.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        else:
            gen.manual_seed(key_to_int(f"{int(seed)}/{row}"))
        gens.append(gen)
    return gens
