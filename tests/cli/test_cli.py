"""The command line: output, and one-line errors with a non-zero exit on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from decodelab.cli import main

TINY = ["--model", "tiny-random"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_prints_text_and_json(capsys):
    code, out, _ = run(capsys, "generate", "hello", *TINY, "--temperature", "0", "--max-new-tokens", "6")
    assert code == 0 and out.endswith("\n")
    code, out, _ = run(capsys, "generate", "hello", *TINY, "--temperature", "0", "--max-new-tokens", "6", "--json")
    data = json.loads(out)
    assert code == 0 and len(data["token_ids"]) == len(data["records"]) <= 6
    assert {"logprob", "entropy", "top", "source"} <= set(data["records"][0])
    assert data["stats"]["new_tokens"] == len(data["token_ids"])


def test_generate_with_speculative_matches_plain(capsys):
    base = ["generate", "abcabcabc", *TINY, "--temperature", "0", "--max-new-tokens", "12", "--json"]
    _, plain, _ = run(capsys, *base)
    code, fast, _ = run(capsys, *base, "--spec", "prompt-lookup", "--spec-option", "k=4")
    assert code == 0 and json.loads(fast)["token_ids"] == json.loads(plain)["token_ids"]


@pytest.mark.parametrize("argv", [
    ["generate", "", *TINY],
    ["generate", "   ", *TINY],
    ["generate", "hi", "--model", "no-such-model"],
    ["generate", "hi", "--model", "/no/such/path.gguf"],
    ["generate", "hi", *TINY, "--temperature", "-1"],
    ["generate", "hi", *TINY, "--top-p", "0"],
    ["generate", "hi", *TINY, "--top-p", "1.5"],
    ["generate", "hi", *TINY, "--top-k", "-3"],
    ["generate", "hi", *TINY, "--min-p", "2"],
    ["generate", "hi", *TINY, "--max-new-tokens", "0"],
    ["generate", "hi", *TINY, "--max-new-tokens", "-5"],
    ["generate", "hi", *TINY, "--stop", ""],
    ["generate", "hi", *TINY, "--logit-bias", "x=1"],
    ["generate", "hi", *TINY, "--logit-bias", "99999=1"],
    ["generate", "hi", *TINY, "--spec", "nope"],
    ["generate", "hi", *TINY, "--spec", "draft"],
    ["generate", "hi", *TINY, "--spec", "prompt-lookup", "--spec-option", "k=0"],
    ["generate", "hi", *TINY, "--spec", "prompt-lookup", "--spec-option", "bogus=1"],
    ["generate", "hi", *TINY, "--draft", "tiny-random"],
    ["generate", "hi", "--spec", "draft-tree", "--draft", "tiny-random"],  # vocabularies differ: no tree
    ["generate", "hi", *TINY, "--spec", "layer-skip", "--spec-option", "layers=9"],
    ["models", "pull", "no-such-pack"],
])
def test_bad_input_is_one_line_error_with_exit_2(capsys, argv):
    code, _, err = run(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


def test_prompt_longer_than_context_is_rejected(capsys):
    code, _, err = run(capsys, "generate", "x" * 600, *TINY)  # tiny-random has 512 positions
    assert code == 2 and err.startswith("error: ") and "context" in err


def test_models_list_shows_packs(capsys):
    code, out, _ = run(capsys, "models", "list")
    assert code == 0
    for name in ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "tiny-random"):
        assert name in out


def test_methods_lists_speculative_methods(capsys):
    code, out, _ = run(capsys, "methods")
    assert code == 0 and "prompt-lookup" in out and "draft" in out


def test_console_script_reports_errors_without_traceback():
    done = subprocess.run([sys.executable, "-m", "decodelab.cli", "generate", "", "--model", "tiny-random"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: the prompt is empty"


def test_chat_streams_replies_and_keeps_history(capsys, monkeypatch):
    import io

    import decodelab as dl

    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\nagain\n\n"))
    code, out, _ = run(capsys, "chat", *TINY, "--temperature", "0", "--max-new-tokens", "5")
    assert code == 0
    replies = [line[2:] for line in out.splitlines() if line.startswith("> ")]
    lm = dl.load("tiny-random")
    first = dl.generate(lm, [{"role": "user", "content": "hello"}], temperature=0, max_new_tokens=5).text
    assert replies[0] == first
    second = dl.generate(lm, [{"role": "user", "content": "hello"}, {"role": "assistant", "content": first},
                              {"role": "user", "content": "again"}], temperature=0, max_new_tokens=5).text
    assert replies[1] == second


@pytest.mark.slow
def test_a_draft_with_another_tokenizer_drafts_across_vocabularies(capsys):
    """`--spec draft` takes a draft whose tokenizer differs (re-tokenized drafts, exact verify):
    greedy output equals plain greedy; tree methods refuse such a draft (above)."""
    flags = ["--weights", "fp32", "--temperature", "0", "--max-new-tokens", "12"]
    code, plain, _ = run(capsys, "generate", "Name three colours.", *flags)
    code2, fast, _ = run(capsys, "generate", "Name three colours.", *flags, "--spec", "draft", "--draft", "tiny-random")
    assert code == code2 == 0 and fast == plain and plain.strip()
