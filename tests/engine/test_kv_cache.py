"""The in-place KV cache (engine.kv_cache): it must hold exactly what Hugging Face's
`DynamicLayer` holds after any sequence of the operations decodelab performs on a cache, copy only
what is new on an append, and keep a copied layer (lookahead's forks) apart from its original.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

import decodelab as dl
from decodelab.engine import Sequence, native_int4
from decodelab.engine.kv_cache import MIN_SPARE_SLOTS, SlotCache, SlotLayer, replace_tail

HEADS, DIM = 2, 4


def _states(batch: int, n: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, HEADS, n, DIM, generator=torch.Generator().manual_seed(seed))


def _random_operations(layer_type: type, seed: int, steps: int = 120) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Apply one seeded random sequence of cache operations (as Sequence uses them) to a fresh
    layer of `layer_type`; return its (keys, values) after every operation."""
    rng = random.Random(seed)
    layer = layer_type()
    batch = 2
    seen = []
    for step in range(steps):
        length = layer.get_seq_length()
        choice = rng.choice(["append", "append", "append", "crop", "select", "rebind", "tail"]) if length else "append"
        if choice == "append":
            n = rng.choice([1, 1, 2, 5, 40])
            layer.update(_states(batch, n, 2 * step), _states(batch, n, 2 * step + 1))
        elif choice == "crop":
            layer.crop(-rng.randint(0, length))
        elif choice == "select":  # rows finished or repeated (resampling)
            rows = [rng.randrange(batch) for _ in range(rng.choice([1, 2, 3]))]
            layer.batch_select_indices(torch.tensor(rows))
            batch = len(rows)
        elif choice == "rebind":  # Sequence.select_rows drops leading all-padding slots
            first = rng.randint(0, length)
            layer.keys = layer.keys[:, :, first:]
            layer.values = layer.values[:, :, first:]
        else:  # keep a token tree's path: gathered slots after `start`
            start = rng.randint(0, length)
            index = torch.tensor([rng.randrange(start, length) for _ in range(rng.randint(0, length - start))]
                                 if length > start else [], dtype=torch.long)
            gather = index[None, None, :, None].expand(batch, HEADS, -1, DIM)
            replace_tail(layer, start, torch.gather(layer.keys, 2, gather), torch.gather(layer.values, 2, gather))
        if layer.get_seq_length():
            seen.append((layer.keys.clone(), layer.values.clone()))
        else:
            seen.append((torch.zeros(0), torch.zeros(0)))
    return seen


def _assert_same_history(got, want):
    assert len(got) == len(want)
    for step, ((gk, gv), (wk, wv)) in enumerate(zip(got, want)):
        assert gk.shape == wk.shape and torch.equal(gk, wk) and torch.equal(gv, wv), f"differs after operation {step}"


@pytest.mark.parametrize("seed", range(6))
def test_slot_layer_holds_what_dynamic_layer_holds(seed):
    _assert_same_history(_random_operations(SlotLayer, seed), _random_operations(DynamicLayer, seed))


class _ForgetsToShorten(SlotLayer):
    """A wrong layer: a crop leaves the used length as it was."""

    def crop(self, tokens_to_remove: int) -> None:
        pass


class _GrowsWithoutCopying(SlotLayer):
    """A wrong layer: a growth leaves the old slots behind (new buffers start uninitialized)."""

    def _make_room(self, keep, end, shape, key_dtype, value_dtype, device):
        super()._make_room(0, end, shape, key_dtype, value_dtype, device)


@pytest.mark.parametrize("broken", [_ForgetsToShorten, _GrowsWithoutCopying])
def test_history_comparison_catches_a_broken_layer(broken):
    want = _random_operations(DynamicLayer, 0)
    with pytest.raises(AssertionError):
        _assert_same_history(_random_operations(broken, 0), want)


def test_appends_write_in_place_until_the_spare_slots_run_out():
    layer = SlotLayer()
    layer.update(_states(1, 300, 0), _states(1, 300, 1))
    buffer, capacity = layer._key_buffer.data_ptr(), layer.capacity
    assert capacity >= 300 + MIN_SPARE_SLOTS
    for step in range(capacity - 300):
        layer.update(_states(1, 1, 10 + step), _states(1, 1, 20 + step))
        assert layer._key_buffer.data_ptr() == buffer  # no copy of the cache while there is room
    layer.update(_states(1, 1, 5), _states(1, 1, 6))
    assert layer._key_buffer.data_ptr() != buffer and layer.get_seq_length() == capacity + 1
    reallocations, last = 0, layer._key_buffer.data_ptr()
    for step in range(4000):  # growth is geometric: few copies over thousands of appends
        layer.update(_states(1, 1, step), _states(1, 1, step))
        reallocations += layer._key_buffer.data_ptr() != last
        last = layer._key_buffer.data_ptr()
    assert reallocations <= 8


def test_a_copied_layer_and_its_original_write_apart():
    layer = SlotLayer()
    layer.update(_states(1, 10, 0), _states(1, 10, 1))
    twin = copy.copy(layer)
    before = layer.keys.clone()
    layer.crop(-3)  # the original rolls back and writes where the copy still reads
    layer.update(_states(1, 3, 2), _states(1, 3, 3))
    twin.update(_states(1, 2, 4), _states(1, 2, 5))
    assert torch.equal(twin.keys[:, :, :10], before)
    assert torch.equal(layer.keys[:, :, :7], before[:, :, :7])
    assert torch.equal(layer.keys[:, :, 7:], _states(1, 3, 2))
    assert torch.equal(twin.keys[:, :, 10:], _states(1, 2, 4))


def test_buffers_made_in_inference_mode_take_writes_outside_it():
    layer = SlotLayer()
    with torch.inference_mode():
        layer.update(_states(1, 5, 0), _states(1, 5, 1))
    layer.replace_tail(2, _states(1, 1, 2), _states(1, 1, 3))
    layer.update(_states(1, 1, 4), _states(1, 1, 5))
    assert layer.get_seq_length() == 4 and torch.equal(layer.keys[:, :, 2:3], _states(1, 1, 2))


def test_sequence_uses_the_slot_cache_for_full_attention_layers():
    lm = dl.load("tiny-random", vocab_size=32)
    seq = Sequence(lm, [[1, 2, 3]])
    assert isinstance(seq.cache, SlotCache) and all(isinstance(layer, SlotLayer) for layer in seq.cache.layers)


@pytest.mark.skipif(not native_int4.available(), reason=native_int4.status())
@pytest.mark.parametrize("batch", [1, 3])
def test_c_layers_store_into_the_cache_what_the_update_path_stores(batch):
    """The C layers write k and v straight into a SlotLayer's buffers; with Hugging Face's
    DynamicCache they go through `update`. Both must give the same logits and cache, bit for bit,
    through steps, a chain, a rollback and a token tree."""
    lm = dl.load("tiny-random", vocab_size=64, init_std=0.2, seed=3, weights="int4", num_layers=3)
    prompts = [[1] + [(5 * i + b) % 60 + 2 for i in range(20 + 3 * b)] for b in range(batch)]

    def run(cache_type: type) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        seq = Sequence(lm, prompts)
        seq.cache = cache_type(config=lm.model.config)
        seq.prefill()
        outs = [seq.forward([[7]] * batch), seq.forward([[8, 9, 10]] * batch)]
        seq.rollback(2)
        outs.append(seq.forward_tree([[11, 12, 13, 14]] * batch, [-1, 0, 0, 1]))
        seq.keep_tree_path([[0, 1, 3]] * batch)
        outs.append(seq.forward([[15]] * batch))
        return outs, [layer.keys for layer in seq.cache.layers] + [layer.values for layer in seq.cache.layers]

    slot_out, slot_cache = run(SlotCache)
    dyn_out, dyn_cache = run(DynamicCache)
    for got, want in zip(slot_out + slot_cache, dyn_out + dyn_cache):
        assert torch.equal(got, want)
