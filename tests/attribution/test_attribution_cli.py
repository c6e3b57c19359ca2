"""`decodelab attribute` and `decodelab compress`: JSON equals Python, CSV rows, view, one-line errors."""

from __future__ import annotations

import json

import pytest

import decodelab as dl
from decodelab.cli import main as cli_main

FLAGS = ["--model", "tiny-random", "--no-chat", "--max-steps", "2", "--probes", "4"]


def test_attribute_json_matches_python_and_csv_has_a_row_per_pair(capsys):
    assert cli_main(["attribute", "the cat", "--output", "ok", "--format", "json"] + FLAGS) == 0
    data = json.loads(capsys.readouterr().out)
    a = dl.attribute(dl.load("tiny-random"), "the cat", "ok", chat=False, max_steps=2, probes=4)
    assert [x for row in data["importance"] for x in row] == pytest.approx([x for row in a.importance for x in row])
    assert cli_main(["attribute", "the cat", "--output", "ok", "--format", "csv"] + FLAGS) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("output_position,output_token,prompt_position") and len(lines) == 1 + 2 * 7
    assert cli_main(["attribute", "the cat", "--max-new-tokens", "2", "--temperature", "0"] + FLAGS) == 0
    assert "output:" in capsys.readouterr().out


def test_compress_json_and_bad_values_give_one_line_errors(capsys):
    assert cli_main(["compress", "the cat sat", "--output", "ok", "--keep", "0.5", "--format", "json"] + FLAGS) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kept_tokens"] == 6 and data["original_tokens"] == 11
    for argv in (["compress", "the cat", "--keep", "2"], ["attribute", "the cat", "--ratio", "1.5"]):
        try:
            code = cli_main(argv + FLAGS)
        except SystemExit as exc:  # argparse's refusal of a flag's value
            code = exc.code
        assert code == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and len(err.strip().splitlines()) == 1
