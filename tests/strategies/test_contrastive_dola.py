"""Contrastive search and DoLa: their defining properties, and agreement with straightforward
reference implementations (full recomputation, no KV cache, one candidate at a time) on tiny models."""

from __future__ import annotations

import math

import pytest
import torch

import decodelab as dl

PROMPTS = [[1, 4, 5, 6, 7], [1, 9, 2], [1, 30, 31, 30, 31, 30]]


@pytest.fixture(scope="module")
def lm():
    return dl.load("tiny-random", vocab_size=64, init_std=0.3, seed=3, num_layers=4)


def _greedy(lm, prompts, steps=10, **kw):
    return [o.token_ids for o in dl.generate(lm, prompts, max_new_tokens=steps, temperature=0, **kw)]


def _forward(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), output_hidden_states=True)


def reference_contrastive(lm, prompt, alpha, k, steps):
    """Su et al. 2022, written out: every candidate scored by a fresh forward of context + candidate."""
    ids = list(prompt)
    for _ in range(steps):
        out = _forward(lm.model, ids)
        probs = out.logits[0, -1].float().softmax(-1)
        context = out.hidden_states[-1][0].float()
        top_p, top_i = probs.topk(k)
        scores = []
        for p, v in zip(top_p.tolist(), top_i.tolist()):
            h = _forward(lm.model, ids + [v]).hidden_states[-1][0, -1].float()
            similarity = max(float(torch.dot(h, c) / (h.norm() * c.norm())) for c in context)
            scores.append((1 - alpha) * p - alpha * similarity)
        ids.append(top_i[max(range(k), key=scores.__getitem__)].item())
        if ids[-1] in lm.eos_token_ids:
            break
    return ids[len(prompt):]


def reference_dola(lm, prompt, layers, steps):
    """Chuang et al. 2024, written out: per layer an early exit (final norm + head), the layer with
    the largest Jensen-Shannon divergence, log-ratio over the plausible head, ties to the final layer."""
    ids = list(prompt)
    n = lm.num_layers
    for _ in range(steps):
        out = _forward(lm.model, ids)
        final = out.logits[0, -1].double().log_softmax(-1)
        best, base = -1.0, None
        for layer in layers:
            if layer == n:
                early = final
            else:
                h = lm.model.model.norm(out.hidden_states[layer][0, -1])
                early = lm.model.lm_head(h).double().log_softmax(-1)
            p, q = final.exp(), early.exp()
            m = (p + q) / 2
            jsd = 0.5 * float((p * (p / m).log()).sum() + (q * (q / m).log()).sum())
            if jsd > best:
                best, base = jsd, early
        plausible = final >= final.max() + math.log(0.1)
        score = torch.where(plausible, final - base, torch.tensor(float("-inf"), dtype=torch.double))
        top = score.max()
        ties = [v for v in range(len(score)) if plausible[v] and score[v] == top]
        ids.append(max(ties, key=lambda v: final[v].item()))
        if ids[-1] in lm.eos_token_ids:
            break
    return ids[len(prompt):]


def test_contrastive_with_penalty_alpha_zero_is_greedy(lm):
    assert _greedy(lm, PROMPTS, strategy="contrastive", strategy_options={"penalty_alpha": 0, "top_k": 5}) == \
        _greedy(lm, PROMPTS)


def test_contrastive_matches_a_reference_implementation_batched(lm):
    got = _greedy(lm, PROMPTS, strategy="contrastive", strategy_options={"penalty_alpha": 0.6, "top_k": 4}, steps=8)
    want = [reference_contrastive(lm, p, 0.6, 4, 8) for p in PROMPTS]
    assert got == want
    assert got != _greedy(lm, PROMPTS, steps=8)  # the penalty changed something here, so the comparison has power


def test_dola_with_the_final_layer_as_premature_layer_is_greedy(lm):
    assert _greedy(lm, PROMPTS, strategy="dola", strategy_options={"dola_layers": lm.num_layers}) == _greedy(lm, PROMPTS)


@pytest.mark.parametrize("layers", ["low", "high", (0, 1, 3)])
def test_dola_matches_a_reference_implementation_batched(lm, layers):
    from decodelab.strategies.dola import candidate_layers

    got = _greedy(lm, PROMPTS, strategy="dola", strategy_options={"dola_layers": layers})
    want = [reference_dola(lm, p, candidate_layers(lm, layers), 10) for p in PROMPTS]
    assert got == want
    assert got != _greedy(lm, PROMPTS)


def test_dola_samples_with_temperature(lm):
    a = dl.generate(lm, PROMPTS[0], max_new_tokens=8, temperature=1, seed=1, strategy="dola")
    b = dl.generate(lm, PROMPTS[0], max_new_tokens=8, temperature=1, seed=1, strategy="dola")
    assert a.token_ids == b.token_ids


def test_contrastive_respects_a_grammar_mask(lm):
    out = dl.generate(lm, "ab", chat=False, max_new_tokens=6, temperature=0, regex="[a-c]+", strategy="contrastive")
    assert out.constraint_satisfied is not False and set(out.text) <= set("abc")


def test_bad_input_is_rejected_with_the_valid_choices(lm):
    with pytest.raises(dl.InvalidOption, match="known: .*contrastive.*dola"):
        dl.generate(lm, "ab", strategy="no-such-strategy")
    with pytest.raises(dl.InvalidOption, match="penalty_alpha"):
        dl.generate(lm, "ab", strategy="contrastive", strategy_options={"penalty_alpha": 1.5})
    with pytest.raises(dl.InvalidOption, match="top_k"):
        dl.generate(lm, "ab", strategy="contrastive", strategy_options={"top_k": 0})
    for layers in ("middle", 99, (1, -1), "1,x"):
        with pytest.raises(dl.InvalidOption, match="dola_layers"):
            dl.generate(lm, "ab", strategy="dola", strategy_options={"dola_layers": layers})
    with pytest.raises(dl.InvalidOption, match="cannot be combined"):
        dl.generate(lm, "ab", strategy="contrastive", speculative="prompt-lookup")
    with pytest.raises(dl.InvalidOption, match="cannot be combined"):
        dl.generate(lm, "ab", strategy="dola", num_beams=2)
