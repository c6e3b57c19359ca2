"""The `llama-cpp` bench method: a clear error without the extra or without a GGUF model."""

from __future__ import annotations

import importlib.util

import pytest

import decodelab as dl
from decodelab.bench.llama_cpp import LlamaCppUnavailable
from decodelab.bench.methods import RunSettings, make_method

has_xllamacpp = importlib.util.find_spec("xllamacpp") is not None


def test_llama_cpp_needs_the_extra_or_a_gguf_model():
    lm = dl.load("tiny-random", vocab_size=64)
    message = "optional extra" if not has_xllamacpp else "needs a GGUF model"
    with pytest.raises(LlamaCppUnavailable, match=message):
        make_method("llama-cpp", lm)


@pytest.mark.slow
@pytest.mark.skipif(not has_xllamacpp, reason="optional extra llama-cpp (xllamacpp) not installed")
def test_llama_cpp_generates_greedy_tokens_on_the_same_file(smol):
    method = make_method("llama-cpp", smol)
    run = method([{"role": "user", "content": "Name a colour."}], RunSettings(8))
    assert 1 <= run.new_tokens <= 8 and run.wall_time > 0
    assert not method.lossless
