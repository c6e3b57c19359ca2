"""The `decodelab bench` subcommand: smoke runs write the three reports; bad input exits 2."""

from __future__ import annotations

import argparse
import json

import pytest

from decodelab.bench.cli import add_bench_parser, run_bench_command


def _parse(argv):
    parser = argparse.ArgumentParser(prog="decodelab")
    add_bench_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", *argv])


def test_quick_on_tiny_random_writes_reports(tmp_path, capsys):
    out = tmp_path / "quick"
    code = run_bench_command(_parse(["--quick", "--model", "tiny-random", "--max-new-tokens", "4",
                                     "--out", str(out), "--no-progress"]))
    assert code == 0
    printed = capsys.readouterr().out
    assert "| method | ms/token |" in printed and str(out / "results.json") in printed
    data = json.loads((out / "results.json").read_text())
    assert data["suite"] == "quick" and data["settings"]["prompts"] == 6 and not data["skipped"]
    assert data["methods"] == ["plain", "hf", "hf-prompt-lookup"]
    assert data["settings"]["max_new_tokens"] == 4 and data["settings"]["warmup"] == "once"
    assert data["summary"]["hf"]["mismatches"] == 0 and data["summary"]["hf-prompt-lookup"]["mismatches"] == 0
    assert (out / "results.md").read_text().startswith("# decodelab bench")
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_draft_adds_hf_assisted_by_default(tmp_path, capsys):
    out = tmp_path / "draft"
    code = run_bench_command(_parse(["--model", "tiny-random", "--draft", "tiny-random", "--suite", "quick",
                                     "--limit", "2", "--max-new-tokens", "3", "--out", str(out), "--no-progress"]))
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    assert data["methods"] == ["plain", "hf", "hf-prompt-lookup", "hf-assisted"]
    assert data["summary"]["hf-assisted"]["mismatches"] == 0
    assert data["summary"]["hf-assisted"]["draft_forwards"] > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "no-such-model"], "error: unknown model 'no-such-model'"),
        (["--model", "tiny-random", "--methods", "plain,no-such-method"], "error: unknown bench method"),
        (["--model", "tiny-random", "--suite", "no-such-suite"], "error: unknown suite 'no-such-suite'"),
        (["--model", "tiny-random", "--methods", "plain,hf-assisted"], "error: bench method 'hf-assisted' needs"),
        (["--model", "tiny-random", "--method-option", "k"], "error: method options are KEY=VALUE"),
    ],
)
def test_bad_input_prints_one_error_line_and_returns_2(argv, message, tmp_path, capsys):
    code = run_bench_command(_parse([*argv, "--quick", "--out", str(tmp_path / "x"), "--no-progress"]))
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message)
    assert not (tmp_path / "x").exists()


def test_out_of_range_numbers_are_refused_before_anything_runs(capsys):
    from decodelab.cli import main

    for flag, value in (("--max-new-tokens", "0"), ("--threads", "100000"), ("--temperature", "nan")):
        with pytest.raises(SystemExit) as done:
            main(["bench", "--model", "tiny-random", flag, value])
        err = capsys.readouterr().err.strip().splitlines()
        assert done.value.code == 2 and len(err) == 1 and err[0].startswith(f"error: argument {flag}: ")


@pytest.mark.slow
def test_quick_on_packaged_smollm2(tmp_path, capsys):
    out = tmp_path / "smol"
    code = run_bench_command(_parse(["--quick", "--max-new-tokens", "4", "--limit", "2", "--out", str(out),
                                     "--no-progress"]))
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    assert data["model"] == "smollm2-135m" and data["settings"]["prompts"] == 2
    for method in ("hf", "hf-prompt-lookup"):
        assert data["summary"][method]["mismatches"] == 0, method
    assert data["summary"]["plain"]["new_tokens"] == 8
