"""Loading: unknown names and paths raise ModelNotFound; tiny-random is seeded and validated."""

from __future__ import annotations

import pytest
import torch

import decodelab as dl


@pytest.mark.parametrize("name", ["no-such-model", "smollm3-9000b", "  ", "/nonexistent/model.gguf",
                                  "/nonexistent/folder", "./definitely/not/here"])
def test_unknown_model_raises_model_not_found(name):
    with pytest.raises(dl.ModelNotFound):
        dl.load(name)


def test_folder_without_config_raises_model_not_found(tmp_path):
    with pytest.raises(dl.ModelNotFound):
        dl.load(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(dl.ModelNotFound):
        dl.load(tmp_path)


def test_broken_gguf_file_raises_a_typed_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DECODELAB_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(dl.DecodelabError):
        dl.load(bad, progress=False)


@pytest.mark.parametrize("options", [dict(vocab_size=2), dict(num_heads=3), dict(num_layers=0)])
def test_bad_tiny_random_options_raise_invalid_option(options):
    with pytest.raises(dl.InvalidOption):
        dl.load("tiny-random", **options)


def test_tiny_random_options_only_apply_to_tiny_random():
    with pytest.raises(dl.InvalidOption):
        dl.load("smollm2", vocab_size=16)


def test_tiny_random_is_seeded():
    a = dl.load("tiny-random", vocab_size=32, seed=4)
    b = dl.load("tiny-random", vocab_size=32, seed=4)
    c = dl.load("tiny-random", vocab_size=32, seed=5)
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.inference_mode():
        la, lb, lc = (m.model(ids).logits for m in (a, b, c))
    assert torch.equal(la, lb)
    assert not torch.allclose(la, lc)
    assert a.vocab_size == 32 and a.eos_token_ids == frozenset({0}) and a.pad_token_id == 0


def test_init_std_sharpens_the_next_token_distribution():
    """init_std is what gives statistical tests power: larger scale, lower entropy."""
    ids = torch.tensor([[1, 4, 5, 6, 7]])

    def entropy(std):
        lm = dl.load("tiny-random", vocab_size=16, init_std=std, seed=1)
        with torch.inference_mode():
            p = lm.model(ids).logits[0, -1].softmax(-1)
        return float(-(p * p.log()).sum())

    assert entropy(0.02) > 2.6 > entropy(0.3)


def test_tiny_random_encodes_and_decodes_text():
    lm = dl.load("tiny-random", vocab_size=64)
    ids = lm.encode("hello", chat=False)
    assert lm.decode(ids) == "hello"
    assert lm.encode([1, 2, 3]) == [1, 2, 3]


@pytest.mark.slow
def test_packaged_model_loads_with_chat_template(smol):
    assert smol.vocab_size == 49152
    assert smol.chat and smol.eos_token_ids
    ids = smol.encode("Hi")
    assert ids == smol.encode([{"role": "user", "content": "Hi"}])
    assert ids != smol.encode("Hi", chat=False)
    assert dl.load(weights="fp32") is smol  # memoised per process and precision
