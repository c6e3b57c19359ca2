"""`decodelab provenance ...`: JSON lines with p_value per item, a table otherwise, one-line errors."""

from __future__ import annotations

import json

import pytest

from decodelab.cli import main as cli_main


def _jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return str(path)


@pytest.fixture(scope="module")
def model_dir(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    trained.lm.model.save_pretrained(folder)
    trained.lm.tokenizer.save_pretrained(folder)
    return str(folder)


def test_mia_json_lines_match_the_python_api(trained, model_dir, tmp_path, capsys):
    import decodelab as dl

    cands = _jsonl(tmp_path / "c.jsonl", trained.members[:5] + trained.non_members[:5])
    ref = _jsonl(tmp_path / "r.jsonl", trained.non_members[100:200])
    assert cli_main(["provenance", "mia", "--model", model_dir, "--candidates", cands, "--reference", ref,
                     "--method", "mink", "--k", "0.3", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = dl.provenance.mia(trained.lm, trained.members[:5] + trained.non_members[:5],
                                 trained.non_members[100:200], method="mink", k=0.3)
    assert [r["index"] for r in rows] == list(range(10))
    assert [r["p_value"] for r in rows] == pytest.approx(expected.p_values)
    assert all(r["method"] == "mink" for r in rows)


def test_mia_table_without_json(trained, model_dir, tmp_path, capsys):
    cands = _jsonl(tmp_path / "c.jsonl", trained.members[:2])
    ref = _jsonl(tmp_path / "r.jsonl", trained.non_members[:10])
    assert cli_main(["provenance", "mia", "--model", model_dir, "--candidates", cands, "--reference", ref]) == 0
    out = capsys.readouterr().out
    assert "p_value" in out and "membership (loss)" in out


def test_identifiers_make_insert_detect(trained, model_dir, tmp_path, capsys):
    assert cli_main(["provenance", "identifiers", "make", "--kind", "words", "--length", "4", "--seed", "11"]) == 0
    ident = capsys.readouterr().out.strip()
    assert ident == trained.identifier
    src = _jsonl(tmp_path / "t.jsonl", ["one two three", "four five six"])
    assert cli_main(["provenance", "identifiers", "insert", "--identifier", ident, "--input", src,
                     "--fraction", "0.5", "--seed", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sum(r["has_identifier"] for r in rows) == 1 and all(set(r) == {"text", "has_identifier"} for r in rows)
    assert cli_main(["provenance", "identifiers", "detect", "--model", model_dir, "--identifier", ident,
                     "--kind", "words", "--length", "4", "--alternatives", "99", "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["p_value"] == pytest.approx(0.01)


@pytest.mark.parametrize("case,message", [
    ("empty", "has no texts"),
    ("binary", "not UTF-8"),
    ("not_json", "line 1 is not JSON"),
    ("no_text", '"text" string'),
    ("missing", "cannot read"),
])
def test_bad_files_are_one_line_errors(tmp_path, capsys, case, message):
    path = tmp_path / "bad.jsonl"
    if case == "empty":
        path.write_text("\n")
    elif case == "binary":
        path.write_bytes(b"\x00\xff\xfe{}")
    elif case == "not_json":
        path.write_text("hello\n")
    elif case == "no_text":
        path.write_text('{"txt": "a"}\n')
    ref = _jsonl(tmp_path / "r.jsonl", ["a reference"])
    code = cli_main(["provenance", "mia", "--model", "tiny-random", "--candidates", str(path), "--reference", ref])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1


def test_unknown_model_and_long_text_are_one_line_errors(tmp_path, capsys):
    cands = _jsonl(tmp_path / "c.jsonl", ["a text"])
    ref = _jsonl(tmp_path / "r.jsonl", ["b text"])
    assert cli_main(["provenance", "mia", "--model", "no-such-model", "--candidates", cands, "--reference", ref]) == 2
    assert "unknown model" in capsys.readouterr().err
    long = _jsonl(tmp_path / "l.jsonl", ["x" * 5000])
    assert cli_main(["provenance", "mia", "--model", "tiny-random", "--candidates", long, "--reference", ref]) == 2
    assert "context" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value", [("--k", "0"), ("--shots", "17"), ("--probe-fraction", "1"),
                                        ("--method", "bogus")])
def test_out_of_range_options_are_refused(tmp_path, capsys, flag, value):
    cands = _jsonl(tmp_path / "c.jsonl", ["a text"])
    try:
        code = cli_main(["provenance", "mia", "--model", "tiny-random", "--candidates", cands, "--reference", cands,
                         flag, value])
    except SystemExit as exc:  # argparse's own refusal of a choice
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "error" in err and "Traceback" not in err


def test_palimpsest_json_line_matches_python(trained, model_dir, tmp_path, capsys):
    import decodelab as dl

    order = _jsonl(tmp_path / "o.jsonl", trained.members[:20])
    assert cli_main(["provenance", "palimpsest", "--model", model_dir, "--order", order, "--resamples", "99",
                     "--reference-model", "tiny-random", "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = dl.provenance.palimpsest(trained.lm, trained.members[:20], resamples=99,
                                        reference=dl.load("tiny-random"))
    assert row["p_value"] == pytest.approx(expected.p_value) and row["examples"] == 20


def test_coin_audit_verifies_proofs_and_reports_the_p_value(trained, model_dir, tmp_path, capsys):
    from dataclasses import asdict

    from decodelab.provenance.coin import Auditor, commit, open_blocks

    tok = trained.lm.tokenizer
    trace = list(tok(" ".join(trained.non_members[:3]), add_special_tokens=False)["input_ids"])
    c = commit(trace, b"secret")
    blocks = open_blocks(trace, b"secret", starts=[0, 16, 32], width=16)
    opened = tmp_path / "opened.json"
    opened.write_text(json.dumps({"commitment": asdict(c), "blocks": [asdict(b) for b in blocks]}))
    cal = tmp_path / "cal.jsonl"
    cal_texts = [" ".join(trained.non_members[i:i + 3]) for i in range(10, 40, 3)]
    cal.write_text("".join(json.dumps({"prompt": "", "text": t}) + "\n" for t in cal_texts))
    args = ["provenance", "coin", "--model", model_dir, "--opened", str(opened), "--prompt", "q", "--calibration",
            str(cal), "--blocks", "3", "--width", "16", "--json"]
    assert cli_main(args) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    auditor = Auditor(trained.lm, [("", list(tok(t, add_special_tokens=False)["input_ids"])) for t in cal_texts],
                      blocks=3, width=16)
    assert row["proofs_valid"] and row["count"] == len(trace)
    assert row["p_value"] == pytest.approx(auditor.audit("q", [b.token_ids for b in blocks]).p_value)
    data = json.loads(opened.read_text())
    data["commitment"]["count"] += 50  # an inflated bill: the proofs no longer verify
    opened.write_text(json.dumps(data))
    assert cli_main(args) == 1
    assert json.loads(capsys.readouterr().out)["invalid_blocks"] == [0, 16, 32]
    opened.write_text("[]")
    assert cli_main(args) == 2 and "not an opened-blocks JSON" in capsys.readouterr().err


def test_fingerprint_find_and_verify(trained, model_dir, capsys):
    assert cli_main(["provenance", "fingerprint", "find", "--model", model_dir, "--length", "14", "--top", "2",
                     "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and trained.response[:10] in rows[0]["continuation"]
    assert cli_main(["provenance", "fingerprint", "verify", "--model", model_dir, "--trigger", trained.trigger,
                     "--response", trained.response, "--alternatives", "99", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["p_value"] == pytest.approx(0.01)
    assert cli_main(["provenance", "fingerprint", "verify", "--model", model_dir, "--trigger", "",
                     "--response", "abc"]) == 2
    assert "trigger" in capsys.readouterr().err
