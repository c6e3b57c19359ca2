"""The C decoder layers (engine.native_layers) for cached few-token forwards of one row.

They must (1) compute what the model computes, up to the order of their sums: close logits, the same
greedy token almost always; (2) keep speculative decoding exact: a chain, a token tree and kept paths
give, bit for bit, the logits and cache of one-token steps (rows independent).
"""

from __future__ import annotations

import pytest
import torch

import decodelab as dl
from decodelab.engine import Sequence, native_int4
from decodelab.engine.direct_forward import DirectForward
from decodelab.engine.native_layers import NativeLayers

pytestmark = pytest.mark.skipif(not native_int4.available(), reason=native_int4.status())

PROMPT = [1] + [(7 * i) % 60 + 2 for i in range(60)]


def _tiny(weights: str, architecture: str = "llama") -> dl.LM:
    if architecture == "llama":
        return dl.load("tiny-random", vocab_size=64, init_std=0.2, seed=3, weights=weights, num_layers=3)
    if architecture == "llama-head-24":  # 4 query heads per key/value head; heads not a multiple of 16 wide
        return dl.load("tiny-random", vocab_size=64, init_std=0.2, seed=3, weights=weights, num_layers=2,
                       hidden_size=192, num_heads=8, num_kv_heads=2)
    from test_direct_forward import _qwen2_tiny

    from decodelab.models import _with_weights

    return _with_weights(_qwen2_tiny(), weights, None)


def _steps_and_tree(lm: dl.LM, prompt: list[int], tokens: list[int], parents: list[int]):
    """(logits of each tree node in one forward, logits of stepping each node's root path)."""
    tree = Sequence(lm, [prompt])
    tree.prefill()
    at_once = tree.forward_tree([tokens], parents)[0]
    by_steps = []
    for node in range(len(tokens)):
        path = [node]
        while parents[path[-1]] >= 0:
            path.append(parents[path[-1]])
        steps = Sequence(lm, [prompt])
        steps.prefill()
        for t in reversed(path):
            last = steps.forward([[tokens[t]]])[0, -1]
        by_steps.append(last)
    return at_once, torch.stack(by_steps)


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
@pytest.mark.parametrize("weights", ["int4", "int8"])
def test_native_layers_apply_to_packed_weights_only(architecture, weights):
    assert NativeLayers.of(_tiny(weights, architecture).model) is not None
    assert NativeLayers.of(_tiny("fp32", architecture).model) is None
    assert NativeLayers.of(_tiny("bf16", architecture).model) is None


@pytest.mark.parametrize("architecture", ["llama", "qwen2", "llama-head-24"])
@pytest.mark.parametrize("weights", ["int4", "int8"])
def test_native_layers_are_close_to_the_models_forward(architecture, weights, monkeypatch):
    lm = _tiny(weights, architecture)
    direct = DirectForward.of(lm.model)
    outputs = {}
    for native in (True, False):
        if not native:
            monkeypatch.setattr(direct, "native", None)
        seq = Sequence(lm, [PROMPT])
        seq.prefill()
        logits = [seq.forward([[5]]), seq.forward([[9, 13, 17, 21]])]
        outputs[native] = torch.cat(logits, 1)[0].float()
        monkeypatch.undo()
    native, model = outputs[True], outputs[False]
    scale = model.abs().max()
    assert (native - model).abs().max() <= 0.02 * scale
    assert torch.equal(native.argmax(-1), model.argmax(-1))


@pytest.mark.parametrize("architecture", ["llama", "qwen2", "llama-head-24"])
@pytest.mark.parametrize("weights", ["int4", "int8"])
def test_native_tree_and_chain_equal_steps_bit_for_bit(architecture, weights):
    lm = _tiny(weights, architecture)
    tokens, parents = [5, 9, 13, 17, 21, 25, 29], [-1, 0, 0, 1, 1, 2, 5]
    at_once, by_steps = _steps_and_tree(lm, PROMPT, tokens, parents)
    assert torch.equal(at_once, by_steps)
    chain = Sequence(lm, [PROMPT])
    chain.prefill()
    chain_logits = chain.forward([[5, 9, 17]])[0]
    assert torch.equal(chain_logits[2], by_steps[3])  # node 3 is the path 5, 9, 17
    steps = Sequence(lm, [PROMPT])
    steps.prefill()
    for t in (5, 9, 17):
        steps.forward([[t]])
    for a, b in zip(chain.cache.layers, steps.cache.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_the_tree_check_sees_a_row_that_depends_on_another(monkeypatch):
    """Negative control: if a verify's rows saw each other (here: every tree node attends to all of
    the forward's new tokens, as a tree forward without its mask would), the check above fails."""
    lm = _tiny("int4")
    real = DirectForward._visible

    def everything(mask, batch, new, slots):
        allowed = None if mask is None else torch.zeros_like(mask)  # additive 0 everywhere: all visible
        return real(allowed, batch, new, slots)

    monkeypatch.setattr(DirectForward, "_visible", staticmethod(everything))
    at_once, by_steps = _steps_and_tree(lm, PROMPT, [5, 9, 13], [-1, 0, 0])
    assert not torch.equal(at_once, by_steps)


@pytest.mark.slow
def test_native_layers_on_smollm2_int4_greedy_matches_the_models_forward(monkeypatch):
    """Over a real prompt, 24 greedy steps through the C layers pick the tokens the model's own
    forward picks (bfloat16 near-ties aside: allow one divergence late), with close logits."""
    lm = dl.load(weights="int4")
    direct = DirectForward.of(lm.model)
    assert direct.native is not None
    prompt = lm.encode("Explain in two sentences why the sky is blue.")
    picked = {}
    for native in (True, False):
        if not native:
            monkeypatch.setattr(direct, "native", None)
        seq = Sequence(lm, [prompt])
        token = int(seq.prefill()[0].argmax())
        tokens = []
        for _ in range(24):
            tokens.append(token)
            token = int(seq.forward([[token]])[0, -1].argmax())
        picked[native] = tokens
        monkeypatch.undo()
    agree = next((i for i, (a, b) in enumerate(zip(picked[True], picked[False])) if a != b), 24)
    assert agree >= 16, (picked[True], picked[False])


def test_native_layers_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("DECODELAB_NATIVE_LAYERS", "0")
    assert NativeLayers.of(_tiny("int4").model) is None


def _joined(lm: dl.LM, prompts: list[list[int]]) -> tuple[Sequence, list[Sequence]]:
    """A batch made of rows prefilled alone (as the server's continuous batching joins requests), and
    each row alone: their caches hold the same keys, the batch's behind left padding."""
    alone = []
    for prompt in prompts:
        seq = Sequence(lm, [prompt])
        seq.prefill()
        alone.append(seq)
    batch = Sequence(lm, [prompts[0]])
    batch.prefill()
    for prompt in prompts[1:]:
        other = Sequence(lm, [prompt])
        other.prefill()
        batch.append_rows(other)
    return batch, alone


@pytest.mark.parametrize("weights", ["int4", "int8"])
def test_native_batch_rows_equal_rows_alone_bit_for_bit(weights):
    lm = _tiny(weights)
    prompts = [PROMPT[:50], PROMPT[:23], PROMPT[5:41]]
    batch, alone = _joined(lm, prompts)
    for step, tokens in enumerate(([[5], [6], [7]], [[9, 10], [11, 12], [13, 14]])):
        logits = batch.forward(tokens)
        for row, seq in enumerate(alone):
            assert torch.equal(logits[row], seq.forward([tokens[row]])[0]), (step, row)
    batch.rollback([1, 0, 2])
    for seq, back in zip(alone, (1, 0, 2)):
        seq.rollback(back)
    tokens, parents = [[3, 4, 8], [15, 16, 17], [18, 19, 20]], [-1, 0, 0]
    tree = batch.forward_tree(tokens, parents)
    for row, seq in enumerate(alone):
        assert torch.equal(tree[row], seq.forward_tree([tokens[row]], parents)[0]), row


def test_the_batch_check_sees_padding_slots_attended(monkeypatch):
    """Negative control: if a padded row attended to its padding slots, the check above fails."""
    lm = _tiny("int4")
    batch, alone = _joined(lm, [PROMPT[:50], PROMPT[:23]])
    real = DirectForward._visible
    monkeypatch.setattr(DirectForward, "_visible",
                        staticmethod(lambda mask, batch_size, new, slots: real(None, batch_size, new, slots)))
    logits = batch.forward([[5], [6]])
    assert not torch.equal(logits[1], alone[1].forward([[6]])[0])
