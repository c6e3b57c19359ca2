"""run_bench on tiny-random: our greedy decoding equals HF generate token for token, counters
are right, reports are written and parse, and unknown methods raise typed errors."""

from __future__ import annotations

import json

import pytest

import decodelab as dl
from decodelab.bench import (
    BenchMethod,
    BenchMethodError,
    MethodRun,
    RunSettings,
    UnknownBenchMethod,
    load_suite,
    make_method,
    parse_method_options,
    run_bench,
    to_markdown,
    write_report,
)
from decodelab.bench.methods import hf_generation_kwargs

PROMPTS = [
    {"id": "a-1", "category": "alpha", "source": "test",
     "messages": [{"role": "user", "content": "the cat sat on the mat"}]},
    {"id": "a-2", "category": "alpha", "source": "test",
     "messages": [{"role": "user", "content": "one two three"}, {"role": "assistant", "content": "four"},
                  {"role": "user", "content": "five six"}]},
    {"id": "b-1", "category": "beta", "source": "test",
     "messages": [{"role": "user", "content": "Hello, world! 123"}]},
]


@pytest.fixture(scope="module")
def bench_lm() -> dl.LM:
    return dl.load("tiny-random", vocab_size=64, init_std=0.5)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    path = tmp_path_factory.mktemp("suite") / "three.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS), encoding="utf-8")
    return load_suite(path)


@pytest.fixture(scope="module")
def greedy_result(bench_lm, suite):
    # A draft with other weights but the same tokenizer, so HF assisted generation really
    # rejects drafts and has to fall back on the target.
    draft = dl.load("tiny-random", vocab_size=64, init_std=0.5, seed=7)
    return run_bench(bench_lm, ["plain", "hf", "hf-prompt-lookup", "hf-assisted"], suite, max_new_tokens=8,
                     temperature=0, seed=0, draft=draft, warmup=False, progress=False)


def test_greedy_plain_matches_hf_generate_token_for_token(greedy_result):
    by = {(r.prompt_id, r.method): r for r in greedy_result.runs}
    assert len(greedy_result.runs) == 3 * 4
    assert greedy_result.reference == "plain"
    total = 0
    for prompt in PROMPTS:
        plain = by[(prompt["id"], "plain")].run.token_ids
        total += len(plain)
        for method in ("hf", "hf-prompt-lookup", "hf-assisted"):
            assert by[(prompt["id"], method)].run.token_ids == plain, (prompt["id"], method)
            assert by[(prompt["id"], method)].matches_reference is True
    assert total > 3 * 2  # the comparison is not vacuous: several tokens per prompt
    for method in ("hf", "hf-prompt-lookup", "hf-assisted"):
        assert greedy_result.summary[method].mismatches == 0


def test_forward_counts_and_ratios(greedy_result):
    s = greedy_result.summary
    # One target forward per token for plain decoding, whether counted by our loop or by the hook on HF.
    assert s["plain"].target_forwards == s["plain"].new_tokens
    assert s["hf"].target_forwards == s["hf"].new_tokens
    assert s["plain"].forwards_per_token == 1.0 and s["hf"].mean_accepted_length == 1.0
    # The assistant is a separate model: its forwards are counted apart from the target's.
    assert s["hf-assisted"].draft_forwards > 0
    assert s["hf-assisted"].target_forwards <= s["hf-assisted"].new_tokens
    assert s["plain"].speedup_vs_plain == 1.0 and s["hf"].speedup_vs_hf == 1.0
    assert s["hf"].speedup_vs_plain == pytest.approx(s["hf"].tokens_per_second / s["plain"].tokens_per_second)
    assert s["plain"].speedup_vs_hf == pytest.approx(1 / s["hf"].speedup_vs_plain)
    for run in greedy_result.runs:
        assert run.run.prefill_time is not None and 0 < run.run.prefill_time <= run.run.wall_time
    assert set(greedy_result.by_category) == {"alpha", "beta"}
    assert greedy_result.by_category["alpha"]["plain"].prompts == 2
    assert set(greedy_result.memory) == {"plain", "hf", "hf-prompt-lookup", "hf-assisted"}
    assert all(m["peak_rss_mb"] > 0 for m in greedy_result.memory.values())


def test_mismatch_count_catches_a_lossy_method(bench_lm, suite):
    """Negative control: a method whose output differs from plain's is counted as a mismatch."""
    plain = make_method("plain", bench_lm)

    def off_by_one(messages, settings):
        run = plain(messages, settings)
        run.token_ids[-1] = (run.token_ids[-1] + 1) % bench_lm.vocab_size
        return run

    result = run_bench(bench_lm, ["plain", BenchMethod("broken", off_by_one)], suite, max_new_tokens=4,
                       warmup=False, progress=False)
    assert result.summary["broken"].mismatches == 3
    assert result.summary["plain"].mismatches == 0
    assert all(r.first_mismatch is not None for r in result.runs if r.method == "broken")


def test_reports_are_written_and_parse(greedy_result, tmp_path):
    paths = write_report(greedy_result, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["methods"] == ["plain", "hf", "hf-prompt-lookup", "hf-assisted"]
    assert len(data["runs"]) == 12 and {"token_ids", "wall_time", "target_forwards"} <= set(data["runs"][0])
    assert data["summary"]["hf"]["mismatches"] == 0
    assert data["machine"]["torch"] and data["machine"]["torch_threads"] >= 1 and data["machine"]["date"]
    assert set(data["machine"]["load_average"]) == {"start", "end"}
    md = paths["markdown"].read_text()
    assert "| method | ms/token | tok/s |" in md and "vs HF generate" in md
    rows = [line for line in md.splitlines() if line.startswith("| hf-assisted |")]
    assert rows and rows[0].rstrip().endswith("| 0/3 |")
    assert "## Speedup vs HF generate by category" in md and "| beta (1) |" in md
    import matplotlib.image

    image = matplotlib.image.imread(paths["png"])
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400


def test_busy_machine_is_flagged():
    from decodelab.bench.report import busy_warning

    assert busy_warning({"cpu_count": 2, "load_average": {"start": 1.0, "end": 1.5}}) == ""
    assert "busy" in busy_warning({"cpu_count": 2, "load_average": {"start": 1.0, "end": 4.5}})


def _fake(name, proposed_by_position, accepted_by_position, tokens):
    def run(messages, settings):
        return MethodRun(token_ids=[5] * tokens, wall_time=0.5, prefill_time=0.1, target_forwards=2,
                         verify_steps=2, proposed=sum(proposed_by_position), accepted=sum(accepted_by_position),
                         acceptance_by_position=list(accepted_by_position),
                         proposed_by_position=list(proposed_by_position))
    return BenchMethod(name, run)


def test_acceptance_by_position_is_pooled_over_prompts(bench_lm, suite, tmp_path):
    result = run_bench(bench_lm, [_fake("plain", [], [], 4), _fake("spec", [2, 2, 1], [2, 1, 0], 6)], suite,
                       max_new_tokens=8, warmup=False, progress=False)
    spec = result.summary["spec"]
    assert spec.acceptance_by_position == [1.0, 0.5, 0.0]
    assert spec.proposed_by_position == [6, 6, 3]
    assert spec.mean_accepted_length == 3.0 and spec.forwards_per_token == pytest.approx(1 / 3)
    assert spec.speedup_vs_plain == pytest.approx(1.5)  # same time, 6 vs 4 tokens
    assert spec.speedup_vs_hf is None  # no hf in this run
    assert spec.decode_ms_per_token == pytest.approx(1000 * 0.4 / 6)
    md = to_markdown(result)
    assert "| spec | 1.00 | 0.50 | 0.00 |" in md
    paths = write_report(result, tmp_path)
    assert paths["png"].stat().st_size > 1000


def test_sampled_runs_report_no_mismatches_and_are_seeded(bench_lm, suite):
    one = load_suite(suite.path, limit=1)
    first = run_bench(bench_lm, ["plain", "hf"], one, max_new_tokens=6, temperature=1.0, seed=3, warmup=False,
                      progress=False)
    again = run_bench(bench_lm, ["plain", "hf"], one, max_new_tokens=6, temperature=1.0, seed=3, warmup=False,
                      progress=False)
    assert first.reference is None
    assert all(s.mismatches is None for s in first.summary.values())
    for a, b in zip(first.runs, again.runs):
        assert a.run.token_ids == b.run.token_ids  # each method's draws repeat with the seed


def test_hf_sampling_settings_override_hf_defaults(bench_lm):
    sampled = hf_generation_kwargs(bench_lm, RunSettings(8, temperature=0.7, seed=1))
    # HF would otherwise apply its own top_k=50; decodelab applies no top-k unless asked.
    assert sampled["do_sample"] and sampled["temperature"] == 0.7
    assert sampled["top_k"] == 0 and sampled["top_p"] == 1.0
    greedy = hf_generation_kwargs(bench_lm, RunSettings(8, temperature=0))
    assert not greedy["do_sample"] and "temperature" not in greedy
    assert greedy["eos_token_id"] == sorted(bench_lm.eos_token_ids)


def test_unknown_and_unbuildable_methods_raise_typed_errors(bench_lm, suite):
    with pytest.raises(UnknownBenchMethod, match="unknown bench method 'no-such-method'") as info:
        run_bench(bench_lm, ["plain", "no-such-method"], suite, max_new_tokens=2, progress=False)
    assert isinstance(info.value, dl.DecodelabError)
    with pytest.raises(BenchMethodError, match="needs a draft model"):
        make_method("hf-assisted", bench_lm)
    with pytest.raises(dl.InvalidOption, match="given twice"):
        run_bench(bench_lm, ["plain", "plain"], suite, max_new_tokens=2, progress=False)
    with pytest.raises(dl.InvalidOption):
        run_bench(bench_lm, ["plain"], suite, max_new_tokens=0, progress=False)


def test_prompts_longer_than_the_context_are_skipped(bench_lm, tmp_path):
    rows = [PROMPTS[0], {"id": "long", "category": "alpha", "source": "test",
                         "messages": [{"role": "user", "content": "x" * (bench_lm.context_length + 10)}]}]
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = run_bench(bench_lm, ["plain"], load_suite(path), max_new_tokens=2, warmup=False, progress=False)
    assert [s["prompt_id"] for s in result.skipped] == ["long"]
    assert [r.prompt_id for r in result.runs] == ["a-1"]


def test_parse_method_options():
    assert parse_method_options(["k=4", "temperature=0.5", "tree=true", "verifier=greedy"]) == {
        "k": 4, "temperature": 0.5, "tree": True, "verifier": "greedy"}
    with pytest.raises(dl.InvalidOption):
        parse_method_options(["novalue"])


def test_a_shared_draft_goes_only_to_the_methods_that_take_one(bench_lm):
    from decodelab.bench.methods import make_methods

    draft = dl.load("tiny-random", vocab_size=64, init_std=0.5, seed=7)
    methods = make_methods(["prompt-lookup:k=3", "token-recycling", "draft:k=3"], bench_lm, draft=draft)
    assert [m.name for m in methods] == ["prompt-lookup:k=3", "token-recycling", "draft:k=3"]
    with pytest.raises(dl.InvalidOption, match="needs a draft model"):
        make_methods(["draft:k=3"], bench_lm)


def test_decodelab_methods_are_timed_on_the_path_users_get(bench_lm, suite, monkeypatch):
    """The bench times the prefill with a forward hook; the hook must go after the prefill, or every
    step would take the model's own forward instead of the engine's direct one (hooks turn it off)."""
    from decodelab.engine.direct_forward import DirectForward

    calls = []
    original = DirectForward.__call__
    monkeypatch.setattr(DirectForward, "__call__", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    run = make_method("plain", bench_lm)(suite.prompts[0].messages, RunSettings(6, temperature=0))
    assert len(run.token_ids) > 1 and len(calls) == len(run.token_ids) - 1
    assert run.prefill_time > 0
    assert not bench_lm.model._forward_hooks


def test_a_draft_models_prefill_is_left_out_of_decode_time(bench_lm, suite, monkeypatch):
    """decodelab's draft methods prefill the draft model after the target's prefill; that prompt
    processing is reported as draft_prefill_time and left out of the decode time (as the target's
    prefill is), and the draft's hooks go too, so its steps take the direct forward."""
    import time as time_module

    draft = dl.load("tiny-random", vocab_size=64, init_std=0.5, seed=7)
    original, pause, calls = draft.model.forward, 0.05, []

    def slow_first_forward(*args, **kwargs):  # the draft's first forward is its prefill: make it stand out
        if not calls:
            time_module.sleep(pause)
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(draft.model, "forward", slow_first_forward)
    run = make_method("draft", bench_lm, draft=draft)(suite.prompts[0].messages, RunSettings(6, temperature=0))
    assert run.draft_prefill_time is not None and run.draft_prefill_time >= pause
    assert run.decode_time == pytest.approx(run.wall_time - run.prefill_time - run.draft_prefill_time)
    assert not draft.model._forward_hooks and not draft.model._forward_pre_hooks
    plain = make_method("plain", bench_lm)(suite.prompts[0].messages, RunSettings(6, temperature=0))
    assert plain.draft_prefill_time is None
