"""ByteLM on the packaged SmolLM2 (byte-level BPE, 49k tokens)."""

from __future__ import annotations

import pytest
import torch

from decodelab.bytes import ByteLM

pytestmark = pytest.mark.slow

MID_TOKEN = [b"caf\xc3", b"def fib(n):\n    ret", b"The capital of Fra"]  # the last one continues below


@pytest.fixture(scope="module")
def bl(smol):
    return ByteLM(smol)


def test_next_byte_law_sums_to_one_mid_token(bl):
    for prefix in MID_TOKEN:
        law = bl.next_byte_logprobs(prefix)
        assert abs(float(law.exp().sum()) - 1) < 1e-4, prefix
    assert int(bl.next_byte_logprobs(b"The capital of Fra").argmax()) == ord("n")
    assert int(bl.next_byte_logprobs(b"caf\xc3").argmax()) == 0xA9  # finishes the UTF-8 of "é"


def test_byte_probability_is_at_least_the_canonical_tokenization(bl, smol):
    text = "The capital of France is Paris."
    ids = smol.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = smol.model(torch.tensor([bl.context + ids])).logits[0].double()
    logits = logits.masked_fill(~bl.vocab.allowed, float("-inf")).log_softmax(-1)
    canonical = float(logits[torch.arange(len(ids)), torch.tensor(ids)].sum())
    byte_level = bl.logprob(text.encode())
    assert byte_level >= canonical - 1e-4
    assert byte_level < canonical + 1.0  # other tokenizations carry little mass in a trained model
    calls_before = bl.model_calls
    bl.logprob(text.encode() + b" It is")
    assert bl.model_calls - calls_before <= 2 * len(b" It is")  # at most a few model calls per byte
