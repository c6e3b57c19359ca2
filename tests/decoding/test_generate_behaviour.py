"""Decoding behaviour: stop strings, EOS, max_new_tokens, seeds, streaming, records and stats."""

from __future__ import annotations

import math

import pytest
import torch

import decodelab as dl
from decodelab.decoding import stream_events

NO_EOS = {0: -100.0}  # tiny-random's EOS is id 0: banning it gives runs of exactly max_new_tokens


def fresh_logprobs(lm: dl.LM, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return lm.model(torch.tensor([ids])).logits[0].double().log_softmax(-1)


# --------------------------------------------------------------------------- length and EOS
def test_max_new_tokens_ends_with_length(tiny_lm, tiny_prompt):
    for n in (1, 2, 17):
        out = dl.generate(tiny_lm, tiny_prompt, temperature=1.0, seed=3, max_new_tokens=n, logit_bias=NO_EOS)
        assert len(out.token_ids) == n
        assert out.finish_reason == "length"
        assert 0 not in out.token_ids


def test_eos_ends_a_row_and_is_included(tiny_lm, tiny_prompt):
    outs = dl.generate(tiny_lm, [tiny_prompt] * 60, temperature=1.0, seed=0, max_new_tokens=12)
    stopped = [o for o in outs if o.finish_reason == "stop"]
    lengths = [o for o in outs if o.finish_reason == "length"]
    assert stopped and lengths, "the case must contain both kinds of ending"
    for out in stopped:
        assert out.token_ids[-1] == 0 and 0 not in out.token_ids[:-1]
        assert "<eos>" not in out.text  # special tokens are not part of the text
    for out in lengths:
        assert len(out.token_ids) == 12 and 0 not in out.token_ids


def test_generation_stops_at_the_end_of_the_context():
    lm = dl.load("tiny-random", vocab_size=16, init_std=0.3, seed=1, context_length=24)
    prompt = [1] + [4, 5, 6, 7] * 4 + [4, 5, 6]  # 20 tokens
    out = dl.generate(lm, prompt, temperature=1.0, seed=1, max_new_tokens=50, logit_bias=NO_EOS)
    assert out.finish_reason == "length"
    # the whole text, prompt and output, fills the context exactly (as HF's max_length would)
    assert len(prompt) + len(out.token_ids) == lm.context_length


# --------------------------------------------------------------------------- stop strings
def _long_greedy(lm, prompt):
    return dl.generate(lm, prompt, temperature=0, max_new_tokens=40, logit_bias=NO_EOS)


def test_stop_string_truncates_text_before_the_stop(tiny_lm_greedy, tiny_prompt):
    full = _long_greedy(tiny_lm_greedy, tiny_prompt)
    assert len(full.text) > 20
    stop = full.text[10:13]  # three characters = three tokens: the stop spans token boundaries
    first = full.text.find(stop)
    out = dl.generate(tiny_lm_greedy, tiny_prompt, temperature=0, max_new_tokens=40, logit_bias=NO_EOS, stop=stop)
    assert out.finish_reason == "stop"
    assert out.text == full.text[:first]
    assert stop not in out.text
    # generation ended with the token that completed the stop string, not later
    assert out.token_ids == full.token_ids[: len(out.token_ids)]
    decoded = tiny_lm_greedy.decode(out.token_ids)
    assert stop in decoded and stop not in tiny_lm_greedy.decode(out.token_ids[:-1])


def test_earliest_of_several_stop_strings_wins(tiny_lm_greedy, tiny_prompt):
    full = _long_greedy(tiny_lm_greedy, tiny_prompt)
    late, early = full.text[25:27], full.text[8:10]
    out = dl.generate(tiny_lm_greedy, tiny_prompt, temperature=0, max_new_tokens=40, logit_bias=NO_EOS,
                      stop=[late, early, "§never§"])
    assert out.text == full.text[: min(full.text.find(late), full.text.find(early))]
    assert out.finish_reason == "stop"


def test_absent_stop_string_changes_nothing(tiny_lm_greedy, tiny_prompt):
    full = _long_greedy(tiny_lm_greedy, tiny_prompt)
    out = dl.generate(tiny_lm_greedy, tiny_prompt, temperature=0, max_new_tokens=40, logit_bias=NO_EOS,
                      stop=["§", "##"])
    assert out.text == full.text and out.token_ids == full.token_ids and out.finish_reason == "length"


def test_stop_string_in_a_batch_stops_only_its_row(tiny_lm_greedy):
    prompts = [[1, 4, 5, 6, 7], [1, 9, 10]]
    fulls = dl.generate(tiny_lm_greedy, prompts, temperature=0, max_new_tokens=30, logit_bias=NO_EOS)
    stop = fulls[0].text[5:7]
    assert stop not in fulls[1].text
    outs = dl.generate(tiny_lm_greedy, prompts, temperature=0, max_new_tokens=30, logit_bias=NO_EOS, stop=stop)
    assert outs[0].text == fulls[0].text[: fulls[0].text.find(stop)] and outs[0].finish_reason == "stop"
    assert outs[1].text == fulls[1].text and outs[1].finish_reason == "length"


# --------------------------------------------------------------------------- seeds
def test_seeded_sampling_is_reproducible(tiny_lm, tiny_prompt):
    cfg = dict(temperature=1.3, top_p=0.95, max_new_tokens=20, logit_bias=NO_EOS)
    a = dl.generate(tiny_lm, tiny_prompt, seed=123, **cfg)
    b = dl.generate(tiny_lm, tiny_prompt, seed=123, **cfg)
    assert a.token_ids == b.token_ids and a.text == b.text
    others = {tuple(dl.generate(tiny_lm, tiny_prompt, seed=s, **cfg).token_ids) for s in range(6)}
    assert len(others) > 3, "different seeds must give different samples"


def test_unseeded_sampling_varies(tiny_lm, tiny_prompt):
    cfg = dict(temperature=1.3, max_new_tokens=20, logit_bias=NO_EOS)
    a = [o.token_ids for o in dl.generate(tiny_lm, [tiny_prompt] * 4, **cfg)]
    b = [o.token_ids for o in dl.generate(tiny_lm, [tiny_prompt] * 4, **cfg)]
    assert a != b


# --------------------------------------------------------------------------- streaming
@pytest.mark.parametrize("options", [dict(temperature=0), dict(temperature=1.2, seed=5), dict(temperature=0, stop="dn")])
def test_stream_pieces_join_to_the_generated_text(tiny_lm_greedy, tiny_prompt, options):
    opts = dict(max_new_tokens=30, logit_bias=NO_EOS, **options)
    pieces = list(dl.stream(tiny_lm_greedy, tiny_prompt, **opts))
    out = dl.generate(tiny_lm_greedy, tiny_prompt, **opts)
    assert "".join(pieces) == out.text
    assert len(pieces) > 1
    assert all(pieces)


def test_stream_events_return_the_outputs(tiny_lm_greedy, tiny_prompt):
    gen = stream_events(tiny_lm_greedy, tiny_prompt, temperature=0, max_new_tokens=10, logit_bias=NO_EOS)
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as done:
        outputs = done.value
    tokens = [t for e in events for t in e.token_ids]
    assert tokens == outputs[0].token_ids
    assert "".join(e.text for e in events) == outputs[0].text
    assert events[-1].finished and not any(e.finished for e in events[:-1])


@pytest.mark.slow
def test_stream_never_breaks_multibyte_characters_on_smollm2(smol):
    prompt = "Translate 'thank you very much' into Japanese. Answer with the Japanese only."
    opts = dict(temperature=0, max_new_tokens=10)
    pieces = list(dl.stream(smol, prompt, **opts))
    out = dl.generate(smol, prompt, **opts)
    assert "".join(pieces) == out.text
    assert not any("\ufffd" in p for p in pieces)
    assert "\ufffd" not in out.text
    # the case is not vacuous: the text has multi-byte characters, and some tokens carry only
    # part of one (their own decoding is U+FFFD)
    assert any(ord(c) > 0x2FFF for c in out.text)
    assert any("\ufffd" in smol.token_text(t) for t in out.token_ids)


# --------------------------------------------------------------------------- records and stats
@pytest.mark.parametrize("options", [dict(temperature=1.0, seed=2), dict(temperature=0.5, top_k=3, seed=4)])
def test_records_hold_the_models_logprob_entropy_and_alternatives(tiny_lm, tiny_prompt, options):
    out = dl.generate(tiny_lm, tiny_prompt, max_new_tokens=8, top_logprobs=4, logit_bias=NO_EOS, **options)
    assert [r.token_id for r in out.records] == out.token_ids
    # a logit bias is processing too: records are under the raw model distribution
    logprobs = fresh_logprobs(tiny_lm, tiny_prompt + out.token_ids)
    for i, (record, token) in enumerate(zip(out.records, out.token_ids)):
        row = logprobs[len(tiny_prompt) - 1 + i]
        assert record.logprob == pytest.approx(float(row[token]), abs=1e-4)
        assert record.entropy == pytest.approx(float(-(row.exp() * row).sum()), abs=1e-4)
        assert record.text == tiny_lm.token_text(token)
        assert record.source == "target"
        assert len(record.top) == 4
        values = [v for _, _, v in record.top]
        assert values == sorted(values, reverse=True)
        assert [t for t, _, _ in record.top] == row.topk(4).indices.tolist()
        assert all(v == pytest.approx(float(row[t]), abs=1e-4) for t, _, v in record.top)
        assert all(text == tiny_lm.token_text(t) for t, text, _ in record.top)
    assert all(math.isfinite(r.logprob) and r.logprob <= 0 for r in out.records)


def test_records_can_be_turned_off(tiny_lm, tiny_prompt):
    out = dl.generate(tiny_lm, tiny_prompt, max_new_tokens=5, records=False, temperature=0, logit_bias=NO_EOS)
    assert out.records == [] and len(out.token_ids) == 5
    out = dl.generate(tiny_lm, tiny_prompt, max_new_tokens=5, top_logprobs=0, temperature=0, logit_bias=NO_EOS)
    assert all(r.top == [] for r in out.records)


def test_greedy_records_pick_the_top_alternative(tiny_lm_greedy, tiny_prompt):
    out = dl.generate(tiny_lm_greedy, tiny_prompt, temperature=0, max_new_tokens=10)
    assert all(r.top[0][0] == r.token_id for r in out.records)


def test_stats_count_one_target_forward_per_new_token(tiny_lm, tiny_prompt):
    """Plain decoding: the prefill forward yields the first token and each later token costs
    one more forward, so target_forwards == new_tokens (the last token is never fed)."""
    prompts = [tiny_prompt, [1, 9], [1, 11, 12, 13]]
    outs = dl.generate(tiny_lm, prompts * 10, temperature=1.0, seed=9, max_new_tokens=9)
    assert len({len(o.token_ids) for o in outs}) > 2, "rows must finish at different times"
    for out in outs:
        s = out.stats
        assert s.new_tokens == len(out.token_ids)
        assert s.target_forwards == s.new_tokens
        assert s.verify_steps == s.new_tokens
        assert s.prompt_tokens == len(out.prompt_token_ids)
        assert s.proposed == 0 and s.accepted == 0 and s.draft_forwards == 0
        assert s.mean_accepted_length == 1.0
        assert s.wall_time >= s.prefill_time > 0
