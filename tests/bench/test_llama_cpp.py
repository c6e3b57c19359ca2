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


@pytest.mark.slow
@pytest.mark.skipif(not has_xllamacpp, reason="optional extra llama-cpp (xllamacpp) not installed")
def test_llama_cpp_teacher_forced_logprobs_are_the_models_own(smol):
    """Scores from llama.cpp's logits agree with ours on the same GGUF file, are unchanged by the
    forcing bias, and fall on scrambled text (so they depend on the scored tokens)."""
    import torch

    from decodelab.bench.llama_cpp import _first_token_record, llama_cpp_runner, llama_cpp_token_logprobs

    run = llama_cpp_runner(smol)
    ids = smol.tokenizer("def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n")["input_ids"]
    theirs = llama_cpp_token_logprobs(run, ids)
    with torch.inference_mode():
        logits = smol.model(torch.tensor([ids])).logits[0, :-1].float()
    ours = logits.log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)
    assert len(theirs) == len(ids) - 1
    # same file, different kernels: per-token log-probs within a few tenths of a nat, mean closer
    diffs = (torch.tensor(theirs) - ours).abs()
    assert float(diffs.mean()) < 0.15 and float(diffs.max()) < 1.0
    # where the text's token is llama.cpp's own greedy choice, forcing it changes nothing
    free = run.server.handle_completions({"prompt": ids[:3], "n_predict": 1, "temperature": 0.0, "n_probs": 1,
                                          "post_sampling_probs": False})
    record = _first_token_record(free)
    forced = llama_cpp_token_logprobs(run, ids[:3] + [int(record["id"])])[-1]
    assert forced == pytest.approx(float(record["logprob"]), abs=1e-4)
    scrambled = ids[:1] + ids[1:][::-1]
    assert sum(llama_cpp_token_logprobs(run, scrambled)) < sum(theirs) - 10


@pytest.mark.skipif(not has_xllamacpp, reason="optional extra llama-cpp (xllamacpp) not installed")
def test_llama_cpp_bad_file_is_a_typed_error(tmp_path):
    """A file llama.cpp cannot load is a LlamaCppUnavailable, not a crash of the caller."""
    from decodelab.bench.llama_cpp import LlamaCppProcess, LlamaCppUnavailable

    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"GGUF\x00\x01\x02 definitely not a model" * 10)
    with pytest.raises(LlamaCppUnavailable, match="could not load"):
        LlamaCppProcess(str(bad), threads=1, context=256)


@pytest.mark.skipif(not has_xllamacpp, reason="optional extra llama-cpp (xllamacpp) not installed")
def test_llama_cpp_server_is_a_separate_process_that_close_ends(smol):
    """Sharing our process slowed both engines 2-3x, so the server runs in a child."""
    import os

    from decodelab.bench.llama_cpp import llama_cpp_runner

    run = llama_cpp_runner(smol)
    child = run.server._process
    assert child.pid != os.getpid() and child.poll() is None
    run.server.close()
    assert child.poll() is not None
