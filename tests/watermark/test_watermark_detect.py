"""Detection on a tiny model (own key detected, other key not), black-box, KGW, bad input, CLI."""

import json

import pytest

import decodelab as dl
from decodelab import watermark
from decodelab.watermark.cli import main as cli_main

NO_EOS = {0: -100.0}  # keep texts long enough to carry a watermark


@pytest.fixture(scope="module")
def lm():
    return dl.load("tiny-random", vocab_size=64, init_std=0.2, seed=4)  # high entropy: room for a watermark


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["exp", "its", "kgw"])
def test_detects_own_key_not_another(lm, scheme):
    outs = watermark.generate(lm, [[1, 5, 6]] * 4, key="right", scheme=scheme, max_new_tokens=60, seed=3,
                              records=False, logit_bias=NO_EOS)
    texts = [o.token_ids for o in outs if len(o.token_ids) >= 30]
    assert texts
    own = watermark.detect(lm, texts, key="right", scheme=scheme, resamples=199)
    other = watermark.detect(lm, texts, key="wrong", scheme=scheme, resamples=199)
    assert max(d.p_value for d in own) <= 0.01
    assert min(d.p_value for d in other) > 0.01


def test_blackbox_selection_is_detected(lm):
    pool = [o.token_ids for o in dl.generate(lm, [[1, 5, 6]] * 96, max_new_tokens=40, temperature=1.0,
                                              records=False, logit_bias=NO_EOS, seed=5)]

    def draw():  # the black box: one sample per call
        return pool.pop()

    picked = [watermark.blackbox_generate(draw, key="bb", m=16) for _ in range(6)]
    flat = [t for ids in picked for t in ids]
    [own] = watermark.detect(lm, [flat], key="bb", scheme="blackbox")
    [other] = watermark.detect(lm, [flat], key="other", scheme="blackbox")
    assert own.p_value < 1e-3 < other.p_value


@pytest.mark.parametrize("key", [None, "", "   ", 1.5, ["k"], True])
def test_bad_key_is_typed(lm, key):
    with pytest.raises(watermark.InvalidKey):
        watermark.detect(lm, [[5, 6, 7]], key=key)
    with pytest.raises(watermark.InvalidKey):
        watermark.generate(lm, "ab", key=key, max_new_tokens=2)


def test_empty_text_and_foreign_tokens_are_typed(lm):
    with pytest.raises(watermark.EmptyText):
        watermark.detect(lm, ["   "], key="k")
    with pytest.raises(watermark.EmptyText):
        watermark.detect(lm, [[]], key="k")
    with pytest.raises(watermark.ForeignTokens):
        watermark.detect(lm, [[5, 6, 64]], key="k")  # id 64 exists only in a bigger vocabulary
    with pytest.raises(dl.VocabularyMismatch):
        watermark.detect(lm, [[-1, 3]], key="k")
    with pytest.raises(dl.InvalidOption):
        watermark.detect(lm, [[5, 6]], key="k", scheme="nope")
    with pytest.raises(dl.InvalidOption):
        watermark.generate(lm, "ab", key="k", temperature=0, max_new_tokens=2)


def test_cli_detect_prints_one_json_per_text(tmp_path, capsys):
    out = watermark.generate(dl.load("tiny-random"), [1, 5, 6], key="cli", max_new_tokens=40, seed=1)
    path = tmp_path / "texts.json"
    path.write_text(json.dumps([out.token_ids, [7, 8, 9, 10, 11, 12]]))
    assert cli_main(["watermark", "detect", "--key", "cli", "--model", "tiny-random", "--resamples", "99",
                     str(path)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["index"] for d in lines] == [0, 1]
    assert lines[0]["p_value"] <= 0.01 and all(0 < d["p_value"] <= 1 for d in lines)


def test_cli_errors_are_one_line(tmp_path, capsys):
    path = tmp_path / "t.txt"
    path.write_text("hello\n")
    assert cli_main(["watermark", "detect", "--key", "", "--model", "tiny-random", str(path)]) == 2
    assert cli_main(["watermark", "detect", "--key", "k", "--model", "tiny-random", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


def test_key_columns_equal_the_full_key_sequence():
    import numpy as np

    from decodelab.watermark.keys import exp_key_columns, exp_key_sequence

    tokens = np.array([0, 5, 17, 999, 4095])
    assert (exp_key_columns("k", 33, tokens) == exp_key_sequence("k", 33, 4096)[:, tokens]).all()
    assert not (exp_key_columns("other", 33, tokens) == exp_key_sequence("k", 33, 4096)[:, tokens]).all()


def test_cli_gap_cost_is_detects_gap_cost_and_gamma_is_kgw_only(tmp_path, capsys):
    """`--gap-cost` is `detect(gap_cost=)` (EXP/ITS); `--gamma` (KGW's green fraction) is refused for EXP."""
    ids = [5, 9, 7, 30, 12, 5, 40, 8, 9, 21]
    path = tmp_path / "texts.json"
    path.write_text(json.dumps([ids]))
    args = ["watermark", "detect", "--key", "k", "--model", "tiny-random", "--resamples", "9", str(path)]
    assert cli_main(args + ["--gap-cost", "0.5"]) == 0
    [line] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [expected] = watermark.detect(dl.load("tiny-random"), [ids], key="k", resamples=9, gap_cost=0.5)
    assert line["statistic"] == expected.statistic and line["p_value"] == expected.p_value
    [default] = watermark.detect(dl.load("tiny-random"), [ids], key="k", resamples=9)
    assert default.statistic != expected.statistic  # the option reaches the statistic
    assert cli_main(args + ["--gamma", "0.5"]) == 2
    assert "--gap-cost" in capsys.readouterr().err
