"""CLI flags of constrained generation: --regex, --json-schema FILE, --grammar FILE, --particles."""

from __future__ import annotations

import json

from decodelab.cli import main

TINY = ["--model", "tiny-random", "--no-chat", "--temperature", "1", "--seed", "0", "--json"]


def run(capsys, *argv: str):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_regex_flag(capsys):
    code, out, _ = run(capsys, "generate", "hello", *TINY, "--regex", "(ea|to)", "--max-new-tokens", "4")
    data = json.loads(out)
    assert code == 0 and data["text"] in ("ea", "to") and data["constraint_satisfied"] is True


def test_schema_and_grammar_files_and_particles(capsys, tmp_path):
    schema = tmp_path / "s.json"
    # tiny-random's 64 tokens have digits 0-7 but no quotes or braces
    schema.write_text(json.dumps({"type": "integer", "minimum": 0, "maximum": 7}))
    code, out, _ = run(capsys, "generate", "hello", *TINY, "--json-schema", str(schema), "--max-new-tokens", "8",
                       "--particles", "4")
    data = json.loads(out)
    assert code == 0 and json.loads(data["text"]) in range(8) and len(data["particles"]) == 4
    assert "log_marginal_likelihood" in data
    lark = tmp_path / "g.lark"
    lark.write_text('start: "t" ("e" | "o")')
    code, out, _ = run(capsys, "generate", "hello", *TINY, "--grammar", str(lark), "--max-new-tokens", "4",
                       "--constraint-method", "awrs")
    data = json.loads(out)
    assert code == 0 and data["text"] in ("te", "to") and "log_weight" in data


def test_bad_constraint_is_a_one_line_error(capsys, tmp_path):
    code, _, err = run(capsys, "generate", "hello", *TINY, "--regex", "(a")
    assert code == 2 and err.startswith("error: invalid regex")
    code, _, err = run(capsys, "generate", "hello", *TINY, "--json-schema", str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read" in err
