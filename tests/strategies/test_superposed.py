"""Superposed decoding: k = 1 is greedy; k drafts match a reference that feeds the superposed
embeddings itself (`inputs_embeds`); the n-gram model from the packaged suites rescores."""

from __future__ import annotations

import math

import pytest
import torch
from strategy_helpers import PROMPTS

import decodelab as dl
from decodelab.strategies.ngram import NgramModel, corpus_ngrams


@pytest.fixture(scope="module")
def lm(lm2):
    return lm2


def reference_superposed(lm, prompt, k, steps):
    embed = lm.model.get_input_embeddings()
    with torch.no_grad():
        inputs = embed(torch.tensor([prompt]))[0]
        drafts = None
        for _ in range(steps):
            logits = lm.model(inputs_embeds=inputs[None]).logits[0, -1].float()
            logits[list(lm.eos_token_ids)] -= 100.0
            top_p, top_ids = logits.softmax(-1).topk(k)
            pairs = list(zip(top_ids.tolist(), top_p.tolist()))
            if drafts is None:
                drafts = [([v], math.log(p)) for v, p in pairs]
            else:
                drafts = [(t + [v], s + math.log(p)) for t, s in drafts for v, p in pairs]
            drafts = sorted(drafts, key=lambda d: -d[1])[:k]
            weights = torch.tensor([s for _, s in drafts]).softmax(-1)
            mixture = (weights[:, None] * embed(torch.tensor([t[-1] for t, _ in drafts]))).sum(0)
            inputs = torch.cat([inputs, mixture[None]])
    return drafts


def _run(lm, **options):
    return dl.generate(lm, PROMPTS, max_new_tokens=8, temperature=0, strategy="superposed", strategy_options=options,
                       logit_bias={t: -100.0 for t in lm.eos_token_ids})


def test_superposed_with_one_draft_is_greedy(lm):
    greedy = dl.generate(lm, PROMPTS, max_new_tokens=8, temperature=0, logit_bias={t: -100.0 for t in lm.eos_token_ids})
    assert [o.token_ids for o in _run(lm, k=1)] == [o.token_ids for o in greedy]


def test_drafts_match_a_reference_that_superposes_embeddings_itself(lm):
    for prompt, out in zip(PROMPTS, _run(lm, k=3, ngram_weight=0)):
        want = reference_superposed(lm, prompt, 3, 8)
        drafts = out.results["superposed"]["drafts"]
        assert [d["token_ids"] for d in drafts] == [t for t, _ in want]
        assert [d["score"] for d in drafts] == pytest.approx([s for _, s in want], abs=1e-4)
        assert out.token_ids == drafts[0]["token_ids"]
        assert len({tuple(d["token_ids"]) for d in drafts}) == 3


def test_the_ngram_model_rescores_drafts(lm):
    model = NgramModel([[1, 2, 3, 1, 2, 4]], order=3)
    assert model.prob([1, 2], 3) == 0.5 and model.prob([7], 2) == pytest.approx(2 / 6)
    assert corpus_ngrams(lm).counts  # built from the packaged prompt suites, offline
    plain = [[d["token_ids"] for d in o.results["superposed"]["drafts"]] for o in _run(lm, k=3, ngram_weight=0)]
    mixed = [[d["token_ids"] for d in o.results["superposed"]["drafts"]] for o in _run(lm, k=3, ngram_weight=0.9)]
    assert plain != mixed
