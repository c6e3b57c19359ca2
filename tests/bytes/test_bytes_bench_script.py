"""scripts/bytes_bench.py on tiny models: each subcommand end to end, and the properties its
numbers rest on (a two-copy ensemble is the model itself, the mixture is the members' weighted
sum, cross-vocabulary drafting equals plain greedy, HF's sampling variant really is USD)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import decodelab as dl
from decodelab.bytes.bench import bytelm_speed
from decodelab.corpus import BenchPrompt, Suite

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bytes_bench.py"
TEXT = "the cat sat on the mat in the sun"  # characters of tiny-random's vocabulary
TINY = "tiny-random:vocab_size=48"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine two threads are ~40x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bytes_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    path = tmp_path_factory.mktemp("texts") / "texts.txt"
    path.write_text(TEXT + "\n\nthe dog ran\n", encoding="utf-8")
    return path


def _bpb(result, source):
    return {row["model"]: row["bits_per_byte"] for row in result["sources"][source]["summary"]}


def test_ensemble_of_two_copies_is_the_model_itself(bench, texts, tmp_path):
    out = tmp_path / "ens.json"
    result = bench.main(["ensemble", "--models", f"{TINY}:seed=0,{TINY}:seed=0", "--source", str(texts), "--texts", "1",
                         "--no-progress", "--out", str(out)])
    bpb = _bpb(result, str(texts))
    single = next(iter(bpb.values()))
    assert single > 0
    for value in bpb.values():  # both copies, the mixture and the product
        assert value == pytest.approx(single, abs=1e-9)
    assert json.loads(out.read_text())["sources"][str(texts)]["texts"] == 1


def test_mixture_is_the_weighted_sum_of_the_members_text_laws(bench, texts):
    result = bench.main(["ensemble", "--models", f"{TINY}:seed=0,{TINY}:seed=1", "--source", str(texts),
                         "--texts", "1", "--no-progress"])
    run = result["sources"][str(texts)]
    assert run["mixture_identity_error"] < 1e-9
    bpb = _bpb(result, str(texts))
    singles = [v for k, v in bpb.items() if "(equal weights)" not in k]
    # -log2(P1/2 + P2/2) lies between the best single model and one bit more, over the whole text
    assert min(singles) - 1e-9 <= bpb["mixture (equal weights)"] <= min(singles) + 1 / run["bytes"] + 1e-9
    assert bpb["product (equal weights)"] != pytest.approx(bpb["mixture (equal weights)"], abs=1e-3)
    # one model call per byte at most for each member: the ensembles reuse the members' work
    assert all(calls <= 1.0 for calls in run["model_calls_per_byte"].values())
    canonical = {row["model"]: row["canonical_bits_per_byte"] for row in run["summary"]}
    for name in [k for k in bpb if "(equal weights)" not in k]:
        assert canonical[name] >= bpb[name] - 1e-4  # one tokenization carries at most the text's mass (float32 noise)


def test_cross_with_the_target_itself_as_draft_equals_plain_greedy(bench):
    result = bench.main(["cross", "--target", TINY, "--draft", TINY, "--prompts", "1", "--max-new-tokens", "4",
                         "--sample-temperature", "0", "--no-progress"])
    assert result["cross_vocabulary"] is False
    row = result["equality"][0]
    assert row["decodelab-draft"]["equal"] is True
    assert result["greedy"].summary["decodelab-draft"].accepted > 0


def test_cross_vocabulary_draft_equals_plain_greedy_and_hf_sampling_runs_usd(bench):
    # fp32, where greedy equality is claimed (and parameters can be copied row by row)
    target = dl.load("tiny-random", vocab_size=48, seed=0, init_std=0.3, weights="fp32")
    draft = dl.load("tiny-random", vocab_size=64, seed=3, init_std=0.3, weights="fp32")  # target's weights on shared rows
    source = dict(target.model.named_parameters())
    with torch.no_grad():
        for name, param in draft.model.named_parameters():
            param[: source[name].shape[0]].copy_(source[name])
    usd = dl.load("tiny-random", vocab_size=64, seed=3, init_std=0.3, weights="fp32")
    usd.model.load_state_dict(draft.model.state_dict())
    prompts = Suite("short", [BenchPrompt("p1", "test", [{"role": "user", "content": "the cat sat on the"}])])
    result = bench.run_cross(target, draft, prompts, max_new_tokens=6, k=3, sample_temperature=1.0, usd_draft=usd,
                             progress=False)
    assert result["cross_vocabulary"] is True
    assert result["equality"][0]["decodelab-draft"]["equal"] is True
    assert result["greedy"].summary["decodelab-draft"].accepted > 0
    assert "hf-universal-speculative" in result["sampling"].summary
    assert result["usd_draft_head"] == "_PruneReindexingLMHead"  # HF pruned the copy, not our draft
    assert type(draft.model.get_output_embeddings()) is torch.nn.Linear
    assert "hf-universal-assisted = plain" in bench.cross_report(result)


def test_float_head_keeps_the_logits_of_a_packed_head(bench):
    lm = dl.load("tiny-random", vocab_size=64, seed=0, weights="int4")
    ids = torch.tensor([[5, 6, 7]])
    with torch.inference_mode():
        before = lm.model(ids).logits.float()
    bench.float_head(lm)
    head = lm.model.get_output_embeddings()
    assert type(head) is torch.nn.Linear and head.weight.dtype == torch.bfloat16
    with torch.inference_mode():
        after = lm.model(ids).logits.float()
    assert torch.allclose(before, after, atol=0.05, rtol=0.02)


def test_speed_recombines_bytelm_speed_exactly(bench, texts):
    result = bench.main(["speed", "--model", TINY, "--source", str(texts), "--texts", "2", "--no-progress"])
    direct = bytelm_speed(bench.load_model(TINY, "auto"), [TEXT, "the dog ran"])
    for key in ("bytes", "model_calls_per_byte", "tokens_forwarded_per_byte", "bytes_per_token"):
        assert result[key] == pytest.approx(direct[key])
    assert result["bytes_per_second"] > 0
    assert bench.speed_row(result).count("|") == 11
