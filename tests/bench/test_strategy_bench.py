"""Repetition metrics (rep-n, distinct-n, the self-reinforcement curve), the checkable problem set,
and `decodelab bench --strategies` end to end on a tiny model."""

from __future__ import annotations

import json

import pytest

import decodelab as dl
from decodelab.bench.problems import check, problems
from decodelab.bench.repetition import distinct_n, rep_n, self_reinforcement
from decodelab.bench.strategies import keywords
from decodelab.cli import main as cli_main


def test_rep_n_and_distinct_n_on_hand_counted_texts():
    assert rep_n([1, 2, 3, 4], 2) == 0.0
    assert rep_n([1, 2, 1, 2, 1, 2], 2) == pytest.approx(1 - 2 / 5)  # 5 bigrams, 2 distinct
    assert rep_n([7, 7, 7, 7, 7], 4) == pytest.approx(1 - 1 / 2)
    assert rep_n([1, 2], 4) == 0.0
    assert distinct_n([[1, 2, 3], [1, 2, 4]], 2) == pytest.approx(3 / 4)
    assert distinct_n([[5, 5, 5]], 1) == pytest.approx(1 / 3)


def test_self_reinforcement_curve_is_measured_per_copy():
    lm = dl.load("tiny-random", vocab_size=64, init_std=0.2, seed=4, num_layers=2)
    curve = self_reinforcement(lm, ["ab cd. ", "xy z. "], repeats=3)
    assert len(curve) == 4 and all(0 < v < 1 for v in curve)


def test_problems_are_checked_by_their_answers():
    ps = problems(8)
    assert {p["kind"] for p in ps} == {"add", "multiply", "reverse", "count"}
    for p in ps:
        assert check(p, f"The answer is {p['answer']}.") if isinstance(p["answer"], int) else check(p, p["answer"])
        assert not check(p, "no idea")
    assert not check({"answer": 12}, "13")


def test_strategy_entries_are_checked():
    assert keywords("nucleus") == {"temperature": 1.0, "top_p": 0.95}
    assert keywords("cautious")["temperature"] > 0
    with pytest.raises(dl.InvalidOption, match="known: .*contrastive"):
        keywords("no-such-strategy")
    with pytest.raises(dl.InvalidOption, match="penalty_alpha"):
        keywords("contrastive:penalty_alpha=3")


def test_bench_strategies_command_writes_its_table(tmp_path, capsys):
    out = tmp_path / "sb"
    code = cli_main(["bench", "--model", "tiny-random", "--strategies", "greedy,typical,momentum:penalty_alpha=1",
                     "--limit", "2", "--max-new-tokens", "6", "--problems", "4", "--out", str(out), "--no-progress"])
    assert code == 0
    data = json.loads((out / "strategies.json").read_text())
    assert [r["name"] for r in data["rows"]] == ["greedy", "typical", "momentum:penalty_alpha=1"]
    assert all(r["new_tokens"] > 0 and r["accuracy"] is not None for r in data["rows"])
    assert (out / "self_reinforcement.png").stat().st_size > 1000
    assert "| momentum:penalty_alpha=1 |" in capsys.readouterr().out
    assert cli_main(["bench", "--model", "tiny-random", "--strategies", "nope", "--limit", "1"]) == 2
