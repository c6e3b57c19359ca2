"""`decodelab tokenizer mixture|digits|charbench`: output, and one-line errors on bad input."""

from __future__ import annotations

import json

import pytest
from surfaces import run_cli

from decodelab.tokenizer import builtin_categories, mixed_texts, train_bpe

SMALL = ["--num-merges", "100", "--max-chars", "300000", "--no-progress"]


run = run_cli


def test_mixture_train_and_infer(capsys):
    code, out, _ = run(capsys, "tokenizer", "mixture", "--train", "english=0.25,python=0.75", "--builtin",
                       "english,python", "--train-chars", "100000", "--json", *SMALL)
    result = json.loads(out)
    assert code == 0 and result["true_proportions"] == {"english": 0.25, "python": 0.75}
    assert result["mean_absolute_error"] < 0.1 and result["merges_used"] == 100
    code, out, _ = run(capsys, "tokenizer", "mixture", "--train", "english=1,python=3", "--builtin", "english,python",
                       "--train-chars", "40000", *SMALL)
    assert code == 0 and "| python |" in out and "mean absolute error" in out


def test_mixture_from_tokenizer_file_and_category_files(capsys, tmp_path):
    cats = builtin_categories(("english", "python"), max_chars=100_000)
    path = tmp_path / "tokenizer.json"
    train_bpe(mixed_texts(cats, {"english": 0.5, "python": 0.5}, 40_000), 100).save(str(path))
    files = []
    for name, cat in cats.items():
        f = tmp_path / f"{name}.txt"
        f.write_text("".join(cat.train + cat.heldout))
        files += ["--category", f"{name}={f}"]
    code, out, _ = run(capsys, "tokenizer", "mixture", "--tokenizer", str(path), *files, "--json", *SMALL)
    shares = json.loads(out)["proportions"]
    assert code == 0 and set(shares) == {"english", "python"} and 0.25 < shares["english"] < 0.75


def test_digits_and_charbench_on_tiny_model(capsys):
    code, out, _ = run(capsys, "tokenizer", "digits", "--model", "tiny-random", "--num-problems", "2",
                       "--groupings", "l2r,r2l", "--json", "--no-progress")
    assert code == 0 and set(json.loads(out)["accuracy"]) == {"l2r", "r2l"}
    code, out, _ = run(capsys, "tokenizer", "charbench", "--model", "tiny-random", "--num-words", "2",
                       "--tasks", "locate", "--no-progress")
    assert code == 0 and "| locate | all | all | 2 |" in out and "majority-answer baseline" in out


@pytest.mark.parametrize("argv", [
    ["mixture", "--builtin", "english,python", *SMALL],  # neither --tokenizer nor --train
    ["mixture", "--train", "english=0.5", "--tokenizer", "x.json", *SMALL],
    ["mixture", "--train", "english=half", "--builtin", "english,python", *SMALL],
    ["mixture", "--train", "english=0.5,python=0.5", "--builtin", "english,dothraki", *SMALL],
    ["mixture", "--tokenizer", "no-such-model-pack", "--builtin", "english,python", *SMALL],
    ["mixture", "--train", "english=1", "--builtin", "english,python", "--num-merges", "0"],
    ["mixture", "--train", "english=1", "--builtin", "english,python", "--train-chars", "1e99"],
    ["digits", "--model", "tiny-random", "--num-problems", "1001"],
    ["digits", "--model", "tiny-random", "--groupings", "diagonal"],
    ["digits", "--model", "no-such-model-pack"],
    ["charbench", "--model", "tiny-random", "--num-words", "nan"],
    ["charbench", "--model", "tiny-random", "--tasks", "rhyme"],
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv):
    code, out, err = run(capsys, "tokenizer", *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err


def test_binary_and_empty_category_files(capsys, tmp_path):
    binary, empty = tmp_path / "b.txt", tmp_path / "e.txt"
    binary.write_bytes(bytes(range(256)))
    empty.write_text("")
    for f in (binary, empty):
        code, out, err = run(capsys, "tokenizer", "mixture", "--train", "english=1", "--builtin", "english",
                             "--category", f"x={f}", *SMALL)
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
