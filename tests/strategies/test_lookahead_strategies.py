"""AdaDec and Cautious Next Token Prediction: both look ahead on a fork of the KV cache.
Checked: the fork leaves the running sequence intact; each strategy reduces to its base decoder
when no step is uncertain; AdaDec matches a reference implementation (fresh forwards); every kept
CNTP trial is the lowest-perplexity one, with perplexities recomputed from scratch."""

from __future__ import annotations

import pytest
import torch
from strategy_helpers import PROMPTS, fresh_logp

import decodelab as dl
from decodelab.engine import Sequence
from decodelab.strategies.lookahead import fork, rollout


@pytest.fixture(scope="module")
def lm(lm4):
    return lm4



def test_fork_and_rollout_leave_the_sequence_as_it_was(lm):
    seq = Sequence(lm, [[1, 4, 5], [1, 9, 2, 8]])
    seq.prefill()
    seq.forward([[7], [3]])
    branch = fork(seq, [1, 1, 0])
    tokens, _, _ = rollout(branch, torch.tensor([5, 6, 7]), 3, lambda lp: lp.argmax(-1))
    assert branch.lengths() == [8, 8, 7]
    after = seq.forward([[11], [12]])[:, -1]
    fresh = Sequence(lm, [[1, 4, 5, 7, 11], [1, 9, 2, 8, 3, 12]]).prefill()
    assert torch.allclose(after, fresh, atol=1e-4)
    assert tokens[1, 1] == int(fresh_logp(lm, [1, 9, 2, 8, 3, 6]).argmax())


def test_adadec_that_never_pauses_is_greedy(lm):
    greedy = [o.token_ids for o in dl.generate(lm, PROMPTS, max_new_tokens=12, temperature=0)]
    outs = dl.generate(lm, PROMPTS, max_new_tokens=12, temperature=0, strategy="adadec",
                       strategy_options={"entropy_threshold": 20})
    assert [o.token_ids for o in outs] == greedy and all(not o.results["adadec"]["paused_at"] for o in outs)


def reference_adadec(lm, prompt, threshold, k, lookahead, steps):
    ids = list(prompt)
    for _ in range(steps):
        lp = fresh_logp(lm, ids)
        if float(-(lp.exp() * lp).sum()) <= threshold:
            choice = int(lp.argmax())
        else:
            best = None
            for cand in lp.topk(k).indices.tolist():
                path, total = ids + [cand], [float(lp[cand])]
                for _ in range(lookahead):
                    nxt = fresh_logp(lm, path)
                    path.append(int(nxt.argmax()))
                    total.append(float(nxt.max()))
                score = sum(total) / len(total)
                if best is None or score > best[0]:
                    best = (score, cand)
            choice = best[1]
        ids.append(choice)
        if choice in lm.eos_token_ids:
            break
    return ids[len(prompt):]


def test_adadec_matches_a_reference_implementation_batched(lm):
    options = {"entropy_threshold": 3.0, "top_k": 3, "lookahead": 2}
    outs = dl.generate(lm, PROMPTS, max_new_tokens=6, temperature=0, strategy="adadec", strategy_options=options)
    assert [o.token_ids for o in outs] == [reference_adadec(lm, p, 3.0, 3, 2, 6) for p in PROMPTS]
    assert any(o.results["adadec"]["paused_at"] for o in outs)
    greedy = [o.token_ids for o in dl.generate(lm, PROMPTS, max_new_tokens=6, temperature=0)]
    assert [o.token_ids for o in outs] != greedy


def test_cautious_that_is_never_unsure_is_plain_sampling(lm):
    plain = [o.token_ids for o in dl.generate(lm, PROMPTS, max_new_tokens=12, temperature=0.8, top_k=20, seed=4)]
    outs = dl.generate(lm, PROMPTS, max_new_tokens=12, temperature=0.8, top_k=20, seed=4, strategy="cautious",
                       strategy_options={"entropy_threshold": 20})
    assert [o.token_ids for o in outs] == plain


def test_cautious_keeps_the_lowest_perplexity_trial(lm):
    outs = dl.generate(lm, PROMPTS, max_new_tokens=16, temperature=1.0, seed=7, strategy="cautious",
                       strategy_options={"entropy_threshold": 0, "trials": 3, "max_trial_tokens": 4})
    checked = 0
    for prompt, out in zip(PROMPTS, outs):
        steps = out.results["cautious"]["steps"]
        assert steps and steps[0]["position"] == 0
        for step in steps:
            pos = step["position"]
            context = prompt + out.token_ids[:pos]
            means = []
            for trial in step["trials"]:
                lps = [float(fresh_logp(lm, context + trial[:j])[trial[j]]) for j in range(len(trial))]
                means.append(sum(lps) / len(lps))
            assert means == pytest.approx(step["mean_logprob"], abs=1e-3)
            kept = step["trials"][step["kept"]]
            assert step["kept"] == max(range(len(means)), key=means.__getitem__)
            room = min(len(kept), 16 - pos)  # the whole trial, unless max_new_tokens cuts it
            assert out.token_ids[pos:pos + room] == kept[:room]
            checked += 1
    assert checked >= 4
