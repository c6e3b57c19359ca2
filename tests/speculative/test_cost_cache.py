"""The verify-cost cache: measured once on one grid, never measured where clients wait, and a
measurement taken under load never replaces a quiet one."""

from __future__ import annotations

import json

import pytest

import decodelab as dl
from decodelab.speculative import cost
from decodelab.speculative.methods import MAX_NODES


@pytest.fixture()
def fake_measure(monkeypatch, tmp_path):
    """Cache in a temporary folder; measurements return a chosen curve and load."""
    monkeypatch.setattr(cost, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(cost, "_MEMO", {})
    plan = {"others": 0.0, "scale": 1.0, "calls": 0}

    def measure(lm, sizes, **kwargs):
        plan["calls"] += 1
        return {n: plan["scale"] * (1.0 + 0.1 * n) for n in sizes}, plan["others"]

    monkeypatch.setattr(cost, "measure_cost_curve", measure)
    return plan


def _stored(lm):
    return json.loads(cost._cache_file(lm, 256).read_text())


def test_the_grid_covers_every_tree_a_request_may_ask_for():
    assert cost.COST_SIZES[-1] >= MAX_NODES + 1
    assert list(cost.COST_SIZES) == sorted(set(cost.COST_SIZES))


def test_sizes_off_the_grid_are_interpolated_not_measured(fake_measure):
    lm = dl.load("tiny-random")
    curve = cost.verify_cost_curve(lm, sizes=(37, 200))
    assert fake_measure["calls"] == 1
    assert curve[37] == pytest.approx(1.0 + 3.7) and curve[200] == pytest.approx(1.0 + 20.0)
    cost.verify_cost_curve(lm, sizes=(5, 111, 257))
    assert fake_measure["calls"] == 1


def test_no_measurement_reads_the_cache_or_gives_nothing(fake_measure):
    lm = dl.load("tiny-random")
    with cost.no_measurement():
        assert cost.verify_cost_curve(lm) == {}
    assert fake_measure["calls"] == 0
    cost.verify_cost_curve(lm)
    cost._MEMO.clear()
    with cost.no_measurement():
        assert cost.verify_cost_curve(lm, sizes=(1,)) == {1: pytest.approx(1.1)}
    assert fake_measure["calls"] == 1


def test_a_quiet_measurement_is_never_replaced(fake_measure):
    lm = dl.load("tiny-random")
    cost.verify_cost_curve(lm)
    assert _stored(lm)["under_load"] is False
    fake_measure.update(others=0.9, scale=5.0)
    cost._MEMO.clear()
    assert cost.verify_cost_curve(lm, sizes=(1,))[1] == pytest.approx(1.1)
    assert fake_measure["calls"] == 1 and _stored(lm)["under_load"] is False


def test_a_measurement_under_load_says_so_and_is_replaced_when_quiet(fake_measure, caplog):
    lm = dl.load("tiny-random")
    fake_measure.update(others=0.9, scale=3.0)
    cost.verify_cost_curve(lm)
    assert _stored(lm)["under_load"] is True and "under load" in caplog.text
    # under load again: the minimum of the two noisy curves, still marked
    fake_measure.update(scale=2.0)
    cost._MEMO.clear()
    assert cost.verify_cost_curve(lm, sizes=(1,))[1] == pytest.approx(2.2)
    assert _stored(lm)["under_load"] is True
    # quiet: replaced
    fake_measure.update(others=0.0, scale=1.0)
    cost._MEMO.clear()
    assert cost.verify_cost_curve(lm, sizes=(1,))[1] == pytest.approx(1.1)
    assert _stored(lm)["under_load"] is False and fake_measure["calls"] == 3
    assert not list(cost._cache_file(lm, 256).parent.glob("*.tmp"))  # written atomically, nothing left over


def test_token_recycling_without_a_curve_uses_its_whole_tree(fake_measure):
    from decodelab.speculative.token_recycling import TokenRecycling

    lm = dl.load("tiny-random")
    spec = TokenRecycling(lm, nodes=20)
    with cost.no_measurement():
        out = dl.generate(lm, "hello", speculative=spec, max_new_tokens=6, temperature=0)
    assert spec.curve is None and spec.choose_size(1) == 20
    assert out.token_ids == dl.generate(lm, "hello", max_new_tokens=6, temperature=0).token_ids
