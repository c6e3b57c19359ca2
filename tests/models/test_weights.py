"""`load(..., weights=...)`: precisions, GGUF codes read exactly, fallbacks, float32 logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import decodelab as dl
from decodelab.engine.quantized_linear import Int4Linear, Int8Linear, QuantizedEmbedding
from decodelab.models.gguf_codes import dequantize, int4_codes


def test_unknown_weights_value_is_an_invalid_option():
    with pytest.raises(dl.InvalidOption, match="weights must be one of"):
        dl.load("tiny-random", weights="int3")


@pytest.mark.parametrize("weights,layer", [("int4", Int4Linear), ("int8", Int8Linear), ("bf16", torch.nn.Linear)])
def test_tiny_random_loads_at_each_precision_with_float32_logits(weights, layer):
    lm = dl.load("tiny-random", vocab_size=64, seed=0, weights=weights)
    assert lm.weights == weights and lm.dtype == torch.bfloat16
    assert isinstance(lm.model.model.layers[0].mlp.down_proj, layer)
    assert isinstance(lm.model.lm_head, layer)
    with torch.inference_mode():
        logits = lm.model(torch.tensor([[1, 5, 6, 7]])).logits
    assert logits.dtype == torch.float32 and logits.shape == (1, 4, 64)
    assert lm.vocab_size == 64


def test_quantized_logits_stay_close_to_float32():
    ids = torch.tensor([[1, 5, 6, 7, 8, 9]])
    ref_lm = dl.load("tiny-random", vocab_size=64, seed=0, init_std=0.2)
    assert ref_lm.weights == "fp32" and ref_lm.dtype == torch.float32  # non-GGUF default stays fp32
    with torch.inference_mode():
        ref = ref_lm.model(ids).logits
        for weights in ("int8", "bf16"):
            got = dl.load("tiny-random", vocab_size=64, seed=0, init_std=0.2, weights=weights).model(ids).logits
            assert float((got - ref).abs().max() / ref.abs().max()) < 0.06, weights


def test_int4_model_computes_its_dequantized_weights_up_to_bfloat16_activations():
    """4-bit codes move a random model's logits a lot; the claim is that the int4 model is the
    float32 model with the dequantized weights, up to bfloat16 activation rounding."""
    ids = torch.tensor([[1, 5, 6, 7, 8, 9]])
    int4 = dl.load("tiny-random", vocab_size=64, seed=0, init_std=0.2, weights="int4")
    ref_lm = dl.load("tiny-random", vocab_size=64, seed=0, init_std=0.2)
    quantized = dict(int4.model.named_modules())
    for name, module in ref_lm.model.named_modules():
        if isinstance(module, torch.nn.Linear):
            module.weight.data = quantized[name].dequantize()
    ref_lm.model.model.embed_tokens.weight.data = int4.model.model.embed_tokens.weight
    with torch.inference_mode():
        ref, got = ref_lm.model(ids).logits, int4.model(ids).logits
    assert float((got - ref).abs().max() / ref.abs().max()) < 0.06


def test_head_the_int4_kernel_cannot_take_falls_back_to_int8_and_says_so():
    lm = dl.load("tiny-random", vocab_size=10, seed=0, weights="int4")
    assert isinstance(lm.model.lm_head, Int8Linear)
    assert isinstance(lm.model.model.layers[0].self_attn.q_proj, Int4Linear)
    assert any("lm_head" in note and "int8" in note for note in lm.weights_report.notes())


def _random_blocks(type_name: str, count: int, seed: int = 0) -> np.ndarray:
    """Random GGUF blocks with sane f16 scales (the codes and 6-bit scales are random bytes)."""
    rng = np.random.default_rng(seed)
    width = {"Q4_0": 18, "Q4_1": 20, "Q4_K": 144}[type_name]
    blocks = rng.integers(0, 256, (count, width), dtype=np.uint8)
    halves = 2 if type_name in ("Q4_1", "Q4_K") else 1
    scales = (rng.uniform(0.001, 0.05, (count, halves)) * rng.choice([-1, 1], (count, halves))).astype(np.float16)
    blocks[:, : 2 * halves] = scales.view(np.uint8).reshape(count, 2 * halves)
    return blocks


@pytest.mark.parametrize("type_name", ["Q4_0", "Q4_1", "Q4_K"])
def test_gguf_4bit_codes_reproduce_the_gguf_dequantization(type_name):
    import gguf

    rows, cols = 16, 512
    per_row = cols // (256 if type_name == "Q4_K" else 32)
    blocks = _random_blocks(type_name, rows * per_row)
    data = blocks.reshape(rows, -1)
    want = gguf.quants.dequantize(data, gguf.GGMLQuantizationType[type_name]).reshape(rows, cols)
    codes, scale, zero = int4_codes(type_name, data, rows, cols)
    assert int(codes.max()) <= 15
    torch.testing.assert_close(dequantize(codes, scale, zero), torch.from_numpy(want).float(), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_smollm2_auto_keeps_the_files_own_precision(smol):
    lm = dl.load(weights="auto")
    assert lm is dl.load() and lm is not dl.load(weights="fp32")  # memoised per precision
    counts = lm.weights_report.counts()
    assert counts.get("int4") == 7 * lm.num_layers  # Q4_1 projections, re-encoded from their codes
    assert isinstance(lm.model.lm_head, Int8Linear)  # Q8_0 embedding tied to the head
    assert isinstance(lm.model.model.embed_tokens, QuantizedEmbedding)
    fp32 = dl.load(weights="fp32")
    q = lm.model.model.layers[0].self_attn.q_proj.dequantize()
    ref = fp32.model.model.layers[0].self_attn.q_proj.weight
    # only the bfloat16 rounding of scale and zero separates the two
    assert float((q - ref).abs().max()) < 0.01 * float(ref.abs().max())
    out = dl.generate(lm, "Name a colour.", max_new_tokens=8, temperature=0)
    assert out.token_ids


def test_report_names_the_int4_kernel_in_use_once():
    from decodelab.engine import native_int4

    lm = dl.load("tiny-random", vocab_size=64, weights="int4")
    assert lm.weights_report.int4_kernel == native_int4.status()
    assert str(lm.weights_report).count(native_int4.status()) == 1
    with native_int4.torch_kernel():
        forced = dl.load("tiny-random", vocab_size=64, weights="int4")
    assert forced.weights_report.int4_kernel.startswith("PyTorch's int4 kernel")
