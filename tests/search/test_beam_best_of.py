"""Beam search and best-of-n as row policies.

Beam search must give exactly what Hugging Face `generate(num_beams=N, do_sample=False)` gives
(default length penalty and early stopping) — on tiny-random models and on the packaged SmolLM2
for 10 prompts — and `num_beams=1` must be plain greedy decoding.
"""

from __future__ import annotations

import pytest
import torch

import decodelab as dl

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time", "The best way to learn",
           "1, 2, 3, 4,", "Water boils at", "My favourite colour is", "import numpy as np\n", "The quick brown fox",
           "Q: What is 2+2?\nA:"]


def hf_beam(lm, ids: list[int], beams: int, new: int, **extra) -> list[int]:
    with torch.inference_mode():
        out = lm.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                num_beams=beams, do_sample=False, max_new_tokens=new,
                                eos_token_id=sorted(lm.eos_token_ids), pad_token_id=lm.pad_token_id, **extra)
    got = out[0, len(ids):].tolist()
    ends = [i for i, t in enumerate(got) if t in lm.eos_token_ids]
    return got[:ends[0] + 1] if ends else got  # a hypothesis ends at its EOS; HF pads after it


@pytest.fixture(scope="module")
def peaky():
    return dl.load("tiny-random", vocab_size=32, init_std=0.2, seed=3)


@pytest.mark.parametrize("beams", [2, 4])
def test_beam_search_equals_hugging_face_on_tiny_models(peaky, beams):
    for prompt in ([1, 4, 5], [1, 9, 9, 4, 7], [1, 12, 3]):
        out = dl.generate(peaky, prompt, num_beams=beams, max_new_tokens=12)
        assert out.token_ids == hf_beam(peaky, prompt, beams, 12), prompt
        assert out.results["beam"]["hypotheses"][0]["token_ids"] == out.token_ids


def test_length_penalty_changes_the_choice_as_in_hugging_face(peaky):
    for penalty in (0.0, 2.0):
        for prompt in ([1, 4, 5], [1, 12, 3]):
            out = dl.generate(peaky, prompt, num_beams=3, max_new_tokens=10, length_penalty=penalty)
            assert out.token_ids == hf_beam(peaky, prompt, 3, 10, length_penalty=penalty)


def test_one_beam_is_greedy_and_batches_give_one_output_per_prompt(peaky):
    greedy = dl.generate(peaky, [1, 4, 5], max_new_tokens=8, temperature=0)
    assert dl.generate(peaky, [1, 4, 5], num_beams=1, max_new_tokens=8, temperature=0).token_ids == greedy.token_ids
    outs = dl.generate(peaky, [[1, 4, 5], [1, 12, 3]], num_beams=3, max_new_tokens=8)
    assert [o.token_ids for o in outs] == [dl.generate(peaky, p, num_beams=3, max_new_tokens=8).token_ids
                                           for p in ([1, 4, 5], [1, 12, 3])]


def test_beam_search_rejects_what_it_cannot_do(peaky):
    with pytest.raises(dl.InvalidOption):
        dl.generate(peaky, [1, 4], num_beams=2, stop=["a"], max_new_tokens=4)
    with pytest.raises(dl.InvalidOption):
        dl.generate(peaky, [1, 4], num_beams=2, speculative="prompt-lookup", max_new_tokens=4)
    with pytest.raises(dl.InvalidOption):
        dl.generate(peaky, [1, 4], num_beams=1000, max_new_tokens=4)


def test_best_of_returns_the_most_likely_of_independent_samples(peaky):
    out = dl.generate(peaky, [1, 4, 5], best_of=6, temperature=1.0, seed=2, max_new_tokens=6)
    candidates = out.results["best_of"]["candidates"]
    assert len(candidates) == 6 and len({tuple(c["token_ids"]) for c in candidates}) > 1  # own streams
    best = max(candidates, key=lambda c: c["mean_logprob"])
    assert out.token_ids == best["token_ids"]
    # the mean log-probability is the model's own: recompute it with a forward pass
    ids = torch.tensor([[1, 4, 5] + out.token_ids])
    with torch.inference_mode():
        logprobs = peaky.model(ids).logits[0, 2:-1].float().log_softmax(-1)
    mean = float(logprobs.gather(-1, torch.tensor(out.token_ids)[:, None]).mean())
    assert abs(mean - out.results["best_of"]["mean_logprob"]) < 1e-4
    with pytest.raises(dl.InvalidOption):
        dl.generate(peaky, [1, 4], best_of=3, temperature=0)  # greedy rows would be copies


@pytest.mark.slow
def test_beam_search_equals_hugging_face_on_smollm2_for_ten_prompts():
    lm = dl.load(weights="fp32")  # token equality with HF is asserted on the float32 model
    for prompt in PROMPTS:
        ids = lm.tokenizer(prompt)["input_ids"]
        out = dl.generate(lm, ids, num_beams=4, max_new_tokens=16)
        assert out.token_ids == hf_beam(lm, ids, 4, 16), prompt
