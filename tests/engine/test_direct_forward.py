"""The direct forward (engine.direct_forward) with its PyTorch glue computes what the model's own
forward computes, bit for bit, for every cached few-token forward of one row it takes: steps,
chains, token trees, and the last-position-only forwards of plain decoding. A decode mixes them the
way speculative methods do. (With packed weights it runs the C layers instead: test_native_layers.)
"""

from __future__ import annotations

import pytest
import torch

import decodelab as dl
from decodelab.engine import Sequence
from decodelab.engine import direct_forward as direct_module
from decodelab.engine.direct_forward import DirectForward


def _decode(lm: dl.LM, prompt: list[int], seed: int, *, direct: bool, monkeypatch) -> list[torch.Tensor]:
    """Logits of a fixed mix of steps, chains and trees (kept paths in between)."""
    if not direct:
        monkeypatch.setattr(DirectForward, "of", classmethod(lambda cls, model: None))
    generator = torch.Generator().manual_seed(seed)
    seq = Sequence(lm, [prompt])
    outputs = [seq.prefill()]
    for round_ in range(8):
        size = int(torch.randint(1, 6, (1,), generator=generator))
        tokens = torch.randint(1, lm.vocab_size, (size,), generator=generator).tolist()
        if round_ % 3 == 0:
            outputs.append(seq.forward([tokens], last_only=round_ % 2 == 0))
            seq.rollback(size // 2)
        else:
            parents = [-1] + [int(torch.randint(0, i, (1,), generator=generator)) for i in range(1, size)]
            outputs.append(seq.forward_tree([tokens], parents))
            path, node = [], size - 1
            while node >= 0:
                path.append(node)
                node = parents[node]
            seq.keep_tree_path([path[::-1]])
    outputs.append(torch.stack([layer.keys for layer in seq.cache.layers]))
    monkeypatch.undo()
    return outputs


def _qwen2_tiny() -> dl.LM:
    """A random tiny Qwen2 (biased q/k/v projections), with tiny-random's tokenizer."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from decodelab.models.lm import LM
    from decodelab.models.tiny import build_tokenizer

    config = Qwen2Config(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(5)
        model = Qwen2ForCausalLM(config)
        for layer in model.model.layers:  # non-zero biases, so that a dropped bias would show
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    return LM(model=model, tokenizer=build_tokenizer(64), name="tiny-qwen2", chat=False)


@pytest.mark.parametrize("weights", ["fp32", "int4", "int8"])
@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_direct_forward_glue_equals_the_models_forward(architecture, weights, monkeypatch):
    if architecture == "llama":
        lm = dl.load("tiny-random", vocab_size=64, init_std=0.2, seed=3, weights=weights)
    else:
        from decodelab.models import _with_weights

        lm = _with_weights(_qwen2_tiny(), weights, None)
    forward = DirectForward.of(lm.model)
    assert forward is not None
    native, forward.native = forward.native, None  # the PyTorch glue (the C layers: test_native_layers)
    try:
        prompt = [1] + [(7 * i) % 60 + 2 for i in range(40)]
        for seed in range(3):
            direct = _decode(lm, prompt, seed, direct=True, monkeypatch=monkeypatch)
            through_model = _decode(lm, prompt, seed, direct=False, monkeypatch=monkeypatch)
            for a, b in zip(direct, through_model):
                assert torch.equal(a, b)
    finally:
        forward.native = native


@pytest.mark.slow
def test_direct_forward_glue_equals_the_models_forward_on_smollm2_int4(monkeypatch):
    lm = dl.load(weights="int4")
    forward = DirectForward.of(lm.model)
    native, forward.native = forward.native, None
    try:
        prompt = lm.encode("Write a function that merges two sorted lists into one sorted list.")
        direct = _decode(lm, prompt, 0, direct=True, monkeypatch=monkeypatch)
        through_model = _decode(lm, prompt, 0, direct=False, monkeypatch=monkeypatch)
        for a, b in zip(direct, through_model):
            assert torch.equal(a, b)
    finally:
        forward.native = native


def test_direct_forward_is_taken_for_cached_single_row_forwards_only(monkeypatch):
    lm = dl.load("tiny-random", vocab_size=64, init_std=0.2, seed=3)
    calls = []
    original = DirectForward.__call__
    monkeypatch.setattr(DirectForward, "__call__", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    seq = Sequence(lm, [[1, 2, 3, 4]])
    seq.prefill()
    assert calls == []  # prefill: the model's own forward
    seq.forward([[5]])
    seq.forward_tree([[6, 7]], [-1, 0])
    assert len(calls) == 2
    batch = Sequence(lm, [[1, 2, 3], [1, 4]])
    batch.prefill()
    batch.forward([[5], [6]])
    assert len(calls) == 2  # several rows: the model's own forward
    seq.keep_hidden_states = True
    seq.rollback(1)
    seq.forward([[8]])
    assert len(calls) == 2 and seq.hidden_states is not None


def test_direct_forward_steps_aside_for_hooks():
    lm = dl.load("tiny-random", vocab_size=64, init_std=0.2, seed=3)
    direct = DirectForward.of(lm.model)
    assert direct.applies(1, 10)
    seen = []
    handle = lm.model.model.layers[0].mlp.register_forward_hook(lambda *args: seen.append(1))
    try:
        assert not direct.applies(1, 10)
        seq = Sequence(lm, [[1, 2, 3]])
        seq.prefill()
        seen.clear()
        seq.forward([[4]])
        assert seen == [1]  # the hook saw the step: the model's own forward ran it
    finally:
        handle.remove()
    assert direct.applies(1, 10)
    assert not direct.applies(direct_module.STEP_CONSISTENT_MAX_QUERIES + 1, 10)
    assert not direct.applies(3, 0)  # no cache yet: prefill
