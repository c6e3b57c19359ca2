"""Greedy decoding (`temperature=0`) equals Hugging Face `generate(do_sample=False)` token for token.

HF gets exactly our prompt ids (text prompts through `lm.encode`, so chat models get the same
chat template), left padding with an attention mask for batches, and our EOS set. Our
generate stops a row at EOS and includes the EOS id; HF pads finished rows, so its new
tokens are cut after the first EOS.
"""

from __future__ import annotations

import pytest
import torch

import decodelab as dl


def hf_greedy(lm: dl.LM, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    width = max(len(p) for p in prompts)
    pad = lm.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        out = lm.model.generate(
            ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
            eos_token_id=sorted(lm.eos_token_ids), pad_token_id=pad,
        )
    rows = []
    for new in out[:, width:].tolist():
        cut = next((i + 1 for i, t in enumerate(new) if t in lm.eos_token_ids), len(new))
        rows.append(new[:cut])
    return rows


TINY_PROMPTS = [[1, 4, 5, 6, 7], [1, 9], [1, 11, 12, 13, 14, 15, 3, 4, 10, 9, 8], [1, 20, 33, 47, 5]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_equals_hf_generate_on_tiny_random(seed):
    lm = dl.load("tiny-random", vocab_size=64, init_std=0.2, seed=seed)
    for prompt in TINY_PROMPTS:
        ours = dl.generate(lm, prompt, temperature=0, max_new_tokens=24)
        (theirs,) = hf_greedy(lm, [prompt], 24)
        assert ours.token_ids == theirs, f"seed {seed}, prompt {prompt}"
        assert ours.finish_reason == ("stop" if theirs[-1] in lm.eos_token_ids else "length")


def test_greedy_comparison_covers_eos_and_length(tiny_lm_greedy):
    """The tiny cases include runs that stop at EOS before max_new_tokens, and the HF trimming
    agrees on them."""
    prompts = [[1, 4, 5, 6, 7], [1, 9, 10], [1, 11, 12, 13, 14, 15, 3, 4]]
    ours = [dl.generate(tiny_lm_greedy, p, temperature=0, max_new_tokens=40) for p in prompts]
    assert any(o.finish_reason == "stop" and len(o.token_ids) < 40 for o in ours)
    assert [o.token_ids for o in ours] == hf_greedy(tiny_lm_greedy, prompts, 40)


def test_greedy_batch_equals_hf_left_padded_batch(tiny_lm64):
    ours = dl.generate(tiny_lm64, TINY_PROMPTS, temperature=0, max_new_tokens=20)
    assert [o.token_ids for o in ours] == hf_greedy(tiny_lm64, TINY_PROMPTS, 20)


def test_greedy_batch_equals_single_prompt_runs(tiny_lm_greedy, tiny_lm64):
    for lm in (tiny_lm_greedy, tiny_lm64):
        batch = dl.generate(lm, TINY_PROMPTS[:3] if lm.vocab_size == 16 else TINY_PROMPTS,
                            temperature=0, max_new_tokens=30)
        for out, prompt in zip(batch, TINY_PROMPTS):
            single = dl.generate(lm, prompt, temperature=0, max_new_tokens=30)
            assert out.token_ids == single.token_ids
            assert out.text == single.text and out.finish_reason == single.finish_reason


SMOL_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
]


@pytest.mark.slow
@pytest.mark.parametrize("prompt", SMOL_PROMPTS)
def test_greedy_equals_hf_generate_on_smollm2(smol, prompt):
    ids = smol.encode(prompt)  # the chat template, exactly as generate applies it
    ours = dl.generate(smol, prompt, temperature=0, max_new_tokens=12)
    assert ours.prompt_token_ids == ids
    assert ours.token_ids == hf_greedy(smol, [ids], 12)[0]


@pytest.mark.slow
def test_greedy_batch_equals_hf_on_smollm2(smol):
    prompts = ["Hi!", "Explain in one sentence why the sky is blue."]
    ids = [smol.encode(p) for p in prompts]
    assert len(ids[0]) != len(ids[1])
    ours = dl.generate(smol, prompts, temperature=0, max_new_tokens=6)
    assert [o.token_ids for o in ours] == hf_greedy(smol, ids, 6)
