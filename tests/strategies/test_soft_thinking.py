"""Soft Thinking: concept tokens really enter the model as embedding mixtures (checked against a
reference that feeds `inputs_embeds` itself); one-token concepts are greedy thinking; Cold Stop and
the thinking budget end the phase with `think_end`, after which decoding is ordinary."""

from __future__ import annotations

import pytest
import torch
from strategy_helpers import PROMPTS

import decodelab as dl


@pytest.fixture(scope="module")
def lm(lm2):
    return lm2


def reference_thinking(lm, prompt, k, steps):
    """Top tokens of each concept, feeding the renormalised top-k mixture of embeddings ourselves."""
    embed = lm.model.get_input_embeddings()
    with torch.no_grad():
        inputs = embed(torch.tensor([prompt]))[0]
        tops = []
        for _ in range(steps):
            logits = lm.model(inputs_embeds=inputs[None]).logits[0, -1].float()
            logits[list(lm.eos_token_ids)] -= 100.0
            probs = logits.softmax(-1)
            p, ids = probs.topk(k)
            tops.append(int(ids[0]))
            mixture = ((p / p.sum())[:, None] * embed(ids)).sum(0)
            inputs = torch.cat([inputs, mixture[None]])
    return tops


def _think(lm, **options):
    no_eos = {t: -100.0 for t in lm.eos_token_ids}
    return dl.generate(lm, PROMPTS, max_new_tokens=12, temperature=0, logit_bias=no_eos, strategy="soft-thinking",
                       strategy_options={"cold_steps": 1000, **options})


def test_concept_tokens_are_embedding_mixtures(lm):
    outs = _think(lm, top_k=8, max_thinking_tokens=6)
    for prompt, out in zip(PROMPTS, outs):
        assert out.token_ids[:6] == reference_thinking(lm, prompt, 8, 6)
    greedy = [o.token_ids[:6] for o in dl.generate(lm, PROMPTS, max_new_tokens=6, temperature=0,
                                                   logit_bias={t: -100.0 for t in lm.eos_token_ids})]
    assert [o.token_ids[:6] for o in outs] != greedy  # the mixtures changed the path


def test_one_token_concepts_think_greedily_then_write_the_marker_and_answer(lm):
    end = lm.tokenizer.encode("</think>", add_special_tokens=False)
    outs = _think(lm, top_k=1, max_thinking_tokens=3)
    for prompt, out in zip(PROMPTS, outs):
        no_eos = {t: -100.0 for t in lm.eos_token_ids}
        greedy = dl.generate(lm, prompt, max_new_tokens=3, temperature=0, logit_bias=no_eos).token_ids
        assert out.token_ids[:3] == greedy
        assert out.token_ids[3:3 + len(end)] == end[: len(out.token_ids) - 3]
        rest = 12 - 3 - len(end)
        if rest > 0:
            answer = dl.generate(lm, prompt + greedy + end, max_new_tokens=rest, temperature=0,
                                 logit_bias=no_eos).token_ids
            assert out.token_ids[3 + len(end):] == answer
        assert out.results["soft-thinking"] == {"thinking_tokens": 3, "stopped_by": "max thinking tokens"}


def test_cold_stop_ends_thinking_when_concepts_are_confident(lm):
    outs = _think(lm, top_k=2, cold_entropy=20, cold_steps=2, max_thinking_tokens=100)
    assert all(o.results["soft-thinking"] == {"thinking_tokens": 1, "stopped_by": "cold stop"} for o in outs)
