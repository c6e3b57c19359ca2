"""Token uncertainty scores: defining properties, generation columns = teacher-forced scores, surfaces."""

from __future__ import annotations

import json
import math

import pytest
import torch

import decodelab as dl
from decodelab.cli import main as cli_main
from decodelab.uncertainty.token_scores import TOKEN_SCORES, score_columns


def _logprobs(probs: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log().float()


def test_one_hot_distribution_has_zero_entropy_full_max_prob_and_margin_one():
    lp = _logprobs([[0.0, 1.0, 0.0, 0.0]])
    cols = score_columns(list(TOKEN_SCORES), lp, torch.tensor([1]))
    assert cols["entropy"] == [0.0]
    assert cols["max_prob"] == [1.0] and cols["margin"] == [1.0] and cols["logprob"] == [0.0]


def test_uniform_distribution_has_entropy_log_v_and_zero_margin():
    v = 50
    lp = torch.full((1, v), -math.log(v))
    cols = score_columns(list(TOKEN_SCORES), lp, torch.tensor([7]))
    assert cols["entropy"][0] == pytest.approx(math.log(v), rel=1e-6)
    assert cols["margin"][0] == pytest.approx(0.0, abs=1e-7)
    assert cols["max_prob"][0] == pytest.approx(1 / v) and cols["logprob"][0] == pytest.approx(-math.log(v))


def test_scores_match_their_definitions_on_a_random_distribution():
    torch.manual_seed(0)
    p = torch.rand(3, 9, dtype=torch.float64)
    p /= p.sum(-1, keepdim=True)
    tokens = torch.tensor([0, 4, 8])
    cols = score_columns(list(TOKEN_SCORES), p.log().float(), tokens)
    for i in range(3):
        row = sorted(p[i].tolist(), reverse=True)
        assert cols["entropy"][i] == pytest.approx(-sum(x * math.log(x) for x in row), rel=1e-5)
        assert cols["margin"][i] == pytest.approx(row[0] - row[1], abs=1e-6)
        assert cols["max_prob"][i] == pytest.approx(row[0], rel=1e-5)
        assert cols["logprob"][i] == pytest.approx(math.log(p[i, tokens[i]]), rel=1e-5)


@pytest.fixture(scope="module")
def lm():
    return dl.load("tiny-random", vocab_size=32, init_std=0.3, seed=3)


def test_generation_columns_equal_teacher_forced_scores(lm):
    prompt = [1, 5, 9, 12, 4]
    out = dl.generate(lm, prompt, max_new_tokens=8, temperature=1.0, seed=4, scores=list(TOKEN_SCORES))
    assert out.records and all(set(r.extra) == set(TOKEN_SCORES) for r in out.records)
    s = dl.score(lm, prompt, out.token_ids)
    assert s.token_ids == out.token_ids and len(s.tokens) == len(out.records)
    for name in TOKEN_SCORES:
        assert s.column(name) == pytest.approx([r.extra[name] for r in out.records], abs=1e-4), name
    # the record's own logprob/entropy are the same quantities
    assert [r.extra["logprob"] for r in out.records] == pytest.approx([r.logprob for r in out.records], abs=1e-6)
    assert [r.extra["entropy"] for r in out.records] == pytest.approx([r.entropy for r in out.records], abs=1e-6)
    assert out.results["scores"]["perplexity"] == pytest.approx(s.perplexity, rel=1e-4)
    assert s.perplexity == pytest.approx(math.exp(-sum(s.column("logprob")) / len(s.tokens)), rel=1e-9)
    assert s.mean_entropy == pytest.approx(sum(s.column("entropy")) / len(s.tokens), rel=1e-9)


def test_score_matches_a_plain_forward_and_batches_like_single_calls(lm):
    prompts, completions = [[1, 5, 9], [1, 7, 7, 7, 7, 3]], [[4, 4, 6, 8], [10]]
    batch = dl.score(lm, prompts, completions)
    for p, c, got in zip(prompts, completions, batch):
        logits = lm.model(input_ids=torch.tensor([p + c])).logits[0].float().log_softmax(-1)
        expected = [float(logits[len(p) - 1 + j, t]) for j, t in enumerate(c)]
        assert got.column("logprob") == pytest.approx(expected, abs=1e-4)
        single = dl.score(lm, p, c)
        for name in TOKEN_SCORES:
            assert got.column(name) == pytest.approx(single.column(name), abs=1e-4)


def test_scores_compose_with_speculative_decoding_and_change_no_token(lm):
    plain = dl.generate(lm, [1, 5, 9], max_new_tokens=8, temperature=0)
    spec = dl.generate(lm, [1, 5, 9], max_new_tokens=8, temperature=0, scores="margin",
                       speculative="prompt-lookup")
    assert spec.token_ids == plain.token_ids
    expected = dl.score(lm, [1, 5, 9], plain.token_ids).column("margin")
    assert [r.extra["margin"] for r in spec.records] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("bad", ["nope", [], "entropy,nope", 3, ["entropy"] * 17 + ["x"]])
def test_bad_score_names_are_rejected(lm, bad):
    with pytest.raises(dl.InvalidOption):
        dl.generate(lm, [1, 5], max_new_tokens=2, scores=bad)
    with pytest.raises(dl.InvalidOption):
        dl.score(lm, [1, 5], [4], scores=bad)


def test_score_bad_input(lm):
    with pytest.raises(dl.InvalidPrompt):
        dl.score(lm, [1, 5], "")
    with pytest.raises(dl.InvalidPrompt):
        dl.score(lm, [1, 5], [99])
    with pytest.raises(dl.InvalidOption):
        dl.score(lm, [[1, 5], [1, 6]], [4])


def test_cli_score_json_csv_and_view(capsys):
    assert cli_main(["score", "ab", "cd", "--model", "tiny-random", "--no-chat", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [t["text"] for t in data["tokens"]] == ["c", "d"] and data["columns"] == list(TOKEN_SCORES)
    s = dl.score(dl.load("tiny-random"), "ab", "cd", chat=False)
    assert [t["entropy"] for t in data["tokens"]] == pytest.approx(s.column("entropy"))
    assert cli_main(["score", "ab", "cd", "--model", "tiny-random", "--no-chat", "--format", "csv",
                     "--scores", "margin"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "position,token_id,text,margin" and len(lines) == 3
    assert cli_main(["score", "ab", "cd", "--model", "tiny-random", "--no-chat"]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert cli_main(["score", "ab", "cd", "--model", "tiny-random", "--scores", "bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
