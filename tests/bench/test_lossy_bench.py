"""`decodelab bench --lossy`: the exact entries agree with plain decoding, a loose lossy entry
does not, and the report carries every axis (speed, agreement, lossy fraction, log p, accuracy)."""

from __future__ import annotations

import json

import pytest

import decodelab as dl
from decodelab.bench.lossy import common_prefix, entry_keywords, run_lossy_bench
from decodelab.cli import main as cli_main
from decodelab.speculative import derive_lm

PROMPTS = [[1, 5, 6, 5, 6, 5], [1, 7, 8, 9, 4]]


@pytest.fixture(scope="module")
def target():
    return dl.load("tiny-random", vocab_size=24, seed=0, init_std=0.25, num_layers=4)


def test_exact_entries_agree_and_a_loose_lossy_entry_does_not(target):
    draft = derive_lm(target, num_layers=1)
    rows = run_lossy_bench(target, ["draft:k=3", "lossy-route:min_confidence=0", "lossy-route:min_confidence=1"],
                           PROMPTS, max_new_tokens=16, draft=draft)
    by = {r.name: r for r in rows}
    assert list(by) == ["plain", "draft:k=3", "lossy-route:min_confidence=0", "lossy-route:min_confidence=1"]
    assert by["plain"].agreement == by["draft:k=3"].agreement == 1.0 and by["draft:k=3"].identical == 1.0
    assert by["lossy-route:min_confidence=1"].agreement == 1.0  # the exact setting
    assert by["lossy-route:min_confidence=1"].lossy_fraction == 0.0
    loose = by["lossy-route:min_confidence=0"]
    assert loose.agreement < 1.0 and loose.lossy_fraction > 0
    assert by["plain"].lossy_fraction is None and by["draft:k=3"].lossy_fraction is None


def test_entries_are_checked_before_running(target):
    with pytest.raises(dl.InvalidOption, match="needs --draft"):
        entry_keywords("lossy-relaxed", None)
    with pytest.raises(dl.InvalidOption, match="neighbours"):
        entry_keywords("lossy-relaxed:neighbours=1000", target)
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2


def test_cli_writes_the_report(tmp_path, capsys):
    code = cli_main(["bench", "--model", "tiny-random", "--draft", "tiny-random", "--lossy",
                     "lossy-relaxed:neighbours=2", "--limit", "1", "--max-new-tokens", "4", "--problems", "1",
                     "--out", str(tmp_path), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "lossy.json").read_text())
    assert [r["name"] for r in data["rows"]] == ["plain", "lossy-relaxed:neighbours=2"]
    assert all(r["accuracy"] is not None and r["tokens_per_second"] > 0 for r in data["rows"])
    assert (tmp_path / "lossy.png").stat().st_size > 0 and (tmp_path / "lossy.md").exists()
    assert cli_main(["bench", "--model", "tiny-random", "--lossy", "lossy-route", "--limit", "1"]) == 2
    assert "needs --draft" in capsys.readouterr().err
