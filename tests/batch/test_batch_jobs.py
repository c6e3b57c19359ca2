"""Batch jobs on local workers: per-row determinism, resuming, exactly once under killed workers,
error records, and each task's records (generate, score, detect, bench)."""

from __future__ import annotations

import json

import pytest
from batch_helpers import TINY, assert_each_id_once, generate_spec, ids_in, kill_processes, write_dataset

import decodelab as dl
from decodelab.batch import JobSpec, Store, row_seed, run_job
from decodelab.batch.rows import parse_rows
from decodelab.cli import main


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The dataset and its output from one worker in this process: what every run must reproduce."""
    folder = tmp_path_factory.mktemp("reference")
    expected = write_dataset(folder / "in.jsonl")
    summary = run_job(generate_spec(), folder / "in.jsonl", folder / "out.jsonl", progress=False)
    assert summary.processed == len(expected) and summary.failed == 3
    return folder / "in.jsonl", (folder / "out.jsonl").read_bytes(), expected


def test_row_seed_depends_on_job_seed_and_id_only():
    assert row_seed(1, "a") == row_seed(1, "a")
    assert len({row_seed(1, "a"), row_seed(2, "a"), row_seed(1, "b")}) == 3
    assert row_seed(1, 5) == row_seed(1, "5")  # ids compare as text
    rows = parse_rows(['{"prompt": "a"}', '{"id": 9, "prompt": "b"}'])
    assert [r.id for r in rows] == [1, 9]
    with pytest.raises(dl.InvalidOption, match="lines 1 and 2"):
        parse_rows(['{"id": "x"}', '{"id": "x"}'])


def test_merge_keeps_one_record_per_id_prefers_results_and_skips_a_partial_line(tmp_path):
    store = Store(tmp_path / "out.jsonl")
    with store.writer() as write:
        write({"id": "b", "error": {"type": "X", "message": "m"}})
        write({"id": "a", "text": "1"})
    with store.writer() as write:
        write({"id": "b", "text": "2"})
        write({"id": "a", "text": "1"})
    (store.parts / "part-killed.jsonl").write_text('{"id": "c", "text": "3"}\n{"id": "d", "te')
    assert store.done() == {"a", "b", "c"}
    store.merge(order=["a", "b", "c", "d"])
    lines = [json.loads(line) for line in store.output.read_text().splitlines()]
    assert lines == [{"id": "a", "text": "1"}, {"id": "b", "text": "2"}, {"id": "c", "text": "3"}]
    assert not store.parts.exists()


@pytest.mark.slow
def test_two_local_workers_write_what_one_writes_and_a_rerun_writes_nothing(reference, tmp_path):
    source, expected_bytes, expected = reference
    out = tmp_path / "out.jsonl"
    summary = run_job(generate_spec(), source, out, workers=2, progress=False)
    assert summary.processed == len(expected)
    assert out.read_bytes() == expected_bytes
    assert_each_id_once(out, expected)
    records = {str(r["id"]): r for r in map(json.loads, out.read_text().splitlines())}
    assert records["too-long"]["error"]["type"] == "PromptTooLong"
    assert records["bad-option"]["error"]["type"] == "InvalidOption"
    assert records[str(len(expected) - 1)]["error"]["type"] == "InvalidPrompt"  # the line that is not JSON
    assert len({r["text"] for r in records.values() if "text" in r}) > 10  # rows draw different streams

    before = out.stat().st_mtime_ns
    again = run_job(generate_spec(), source, out, workers=2, progress=False)
    assert (again.processed, again.already_done) == (0, len(expected))
    assert out.stat().st_mtime_ns == before and out.read_bytes() == expected_bytes


@pytest.mark.slow
def test_killed_local_workers_lose_and_duplicate_nothing(reference, tmp_path):
    source, expected_bytes, expected = reference
    out = tmp_path / "out.jsonl"
    killed: list[int] = []
    seen: list[dict] = []

    def kill_workers_once(record):
        # Both workers, at the third record: the worker that sent it holds no row then, and at the
        # first record the other one may still be loading its model on a busy machine (no row to
        # requeue); by the third, it has long been working.
        seen.append(record)
        if len(seen) == 3 and not killed:
            killed.extend(kill_processes("multiprocessing.forkserver", children_only=True))

    summary = run_job(generate_spec(), source, out, workers=2, progress=False, on_record=kill_workers_once)
    assert len(killed) == 2
    assert summary.restarts >= 2 and summary.requeued >= 1
    assert_each_id_once(out, expected)
    assert out.read_bytes() == expected_bytes


def test_a_run_killed_half_way_resumes_where_it_stopped(reference, tmp_path):
    source, expected_bytes, expected = reference
    out = tmp_path / "out.jsonl"

    def stop_after_five(record, seen=[]):  # noqa: B006 - counts across calls
        seen.append(record)
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(generate_spec(), source, out, progress=False, on_record=stop_after_five)
    assert not out.exists() and len(list(Store(out).parts.glob("part-*"))) == 1
    summary = run_job(generate_spec(), source, out, progress=False)
    assert (summary.already_done, summary.processed) == (5, len(expected) - 5)
    assert out.read_bytes() == expected_bytes


def test_another_job_on_the_same_output_is_refused(reference, tmp_path):
    source, _, _ = reference
    out = tmp_path / "out.jsonl"
    run_job(generate_spec(max_new_tokens=2), source, out, progress=False)
    with pytest.raises(dl.InvalidOption, match="different job"):
        run_job(generate_spec(max_new_tokens=3), source, out, progress=False)
    assert run_job(generate_spec(max_new_tokens=3), source, out, progress=False, overwrite=True).processed > 0


def test_score_is_the_logprob_generate_recorded(tmp_path):
    lm = dl.load("tiny-random", **TINY)
    outs = dl.generate(lm, ["hello", "abc"], max_new_tokens=10, temperature=1.0, seed=1, chat=False)
    rows = [{"id": i, "prompt": p, "completion": o.token_ids} for i, (p, o) in enumerate(zip(["hello", "abc"], outs))]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = JobSpec("score", model="tiny-random", model_options=TINY, threads=1, options={"chat": False})
    run_job(spec, tmp_path / "in.jsonl", tmp_path / "out.jsonl", progress=False)
    for line, prompt, out in zip((tmp_path / "out.jsonl").read_text().splitlines(), ["hello", "abc"], outs):
        record = json.loads(line)
        assert record["token_ids"] == out.token_ids
        assert record["logprobs"] == pytest.approx([r.logprob for r in out.records], abs=1e-4)
        assert record["sum_logprob"] == pytest.approx(sum(r.logprob for r in out.records), abs=1e-3)
        # the same rows dl.score gives, with every score column
        direct = dl.score(lm, prompt, out.token_ids, chat=False)
        assert [t["entropy"] for t in record["tokens"]] == pytest.approx(direct.column("entropy"), abs=1e-4)
        assert record["perplexity"] == pytest.approx(direct.perplexity, rel=1e-4)


def test_batch_detect_finds_the_watermark_batch_generate_put_in(tmp_path):
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"prompt": f"row {i}"}) + "\n" for i in range(6)))
    watermark = {"scheme": "exp", "key": "k1", "n": 64}
    flat = {"vocab_size": 64, "seed": 3}  # near-flat next-token laws: room for a strong watermark
    spec = JobSpec("generate", model="tiny-random", model_options=flat, threads=1, seed=1,
                   options={"max_new_tokens": 32, "temperature": 1.0, "watermark": watermark, "chat": False})
    run_job(spec, tmp_path / "in.jsonl", tmp_path / "gen.jsonl", progress=False)
    generated = [json.loads(line) for line in (tmp_path / "gen.jsonl").read_text().splitlines()]
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps({"id": g["id"], "token_ids": g["token_ids"]}) + "\n"
                                                  for g in generated))
    p_values = {}
    for key in ("k1", "not-the-key"):
        detect = JobSpec("detect", model="tiny-random", model_options=flat, threads=1, seed=0,
                         options={"key": key, "scheme": "exp", "n": 64, "resamples": 99})
        run_job(detect, tmp_path / "texts.jsonl", tmp_path / f"{key}.jsonl", progress=False)
        p_values[key] = [json.loads(line)["p_value"] for line in (tmp_path / f"{key}.jsonl").read_text().splitlines()]
    assert max(p_values["k1"]) <= 0.02  # 1/(99+1) is the smallest p-value of 99 resamples
    assert min(p_values["not-the-key"]) > 0.02  # negative control: the test sees no watermark without the key


def test_bench_rows_report_each_method(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"id": "a", "prompt": "abcabcabc"}\n')
    spec = JobSpec("bench", model="tiny-random", model_options=TINY, threads=1,
                   options={"methods": ["plain", "prompt-lookup"], "max_new_tokens": 8})
    run_job(spec, tmp_path / "in.jsonl", tmp_path / "out.jsonl", progress=False)
    [record] = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert set(record["methods"]) == {"plain", "prompt-lookup"}
    assert record["matches_reference"] == {"plain": True, "prompt-lookup": True}
    assert record["methods"]["plain"]["new_tokens"] == 8


def test_cli_runs_a_job_and_reports_bad_job_options_in_one_line(tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text('{"prompt": "hi"}\n{"prompt": "yo"}\n')
    base = ["batch", "generate", "--model", "tiny-random", "--input", str(tmp_path / "in.jsonl"), "--no-progress"]
    assert main(base + ["--output", str(tmp_path / "out.jsonl"), "--max-new-tokens", "3", "--seed", "4"]) == 0
    assert ids_in(tmp_path / "out.jsonl") == ["1", "2"]
    assert "2 rows: 2 run now (0 failed)" in capsys.readouterr().err
    assert main(base + ["--output", str(tmp_path / "bad.jsonl"), "--top-p", "7"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "top_p" in err and len(err.splitlines()) == 1
    # the same from local worker processes (the error is raised where the model is loaded)
    assert main(base + ["--output", str(tmp_path / "bad.jsonl"), "--top-p", "7", "--workers", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "top_p" in err and len(err.splitlines()) == 1
    # the failed job left nothing that would block the corrected one
    assert main(base + ["--output", str(tmp_path / "bad.jsonl"), "--top-p", "0.7", "--max-new-tokens", "2"]) == 0
    assert main(["batch", "detect", "--key", "k", "--gamma", "0.5", "--input", str(tmp_path / "in.jsonl"),
                 "--output", str(tmp_path / "d.jsonl")]) == 2
