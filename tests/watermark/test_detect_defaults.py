"""Detection's defaults: Besag-Clifford early stopping (valid, calibrated p-values; unchanged where it does
not trigger, against the naive oracle), the same defaults on the CLI and the server, the p-value's
resolution in every result, the progress bar and numba's cache directory."""

import json

import numpy as np
import pytest
from scipy import stats

import decodelab as dl
from decodelab import watermark
from decodelab.watermark import align, jitcache
from decodelab.watermark.cli import main as cli_main
from decodelab.watermark.detect import DEFAULT_RESAMPLES, DEFAULT_STOP_AFTER


def _null_batch(rng, texts, m, n, vocab):
    """Random texts and, per text, an independent random EXP key (so H0 holds and p-values are independent)."""
    token_lists = [rng.integers(0, vocab, m) for _ in range(texts)]
    tables = [(rng.random((n, len(np.unique(t)))), None, None) for t in token_lists]
    return token_lists, tables


def test_defaults_are_early_stopping_with_1000_resamples():
    assert (DEFAULT_RESAMPLES, DEFAULT_STOP_AFTER) == (1000, 10)
    [d] = watermark.detect(None, [[3, 1, 4, 1, 5, 9, 2, 6]], key="k", vocab_size=50)
    assert d.stopped_early and d.hits == 10 and d.resamples < 1000
    assert d.p_value == pytest.approx(10 / d.resamples)
    low, high = d.p_value_bounds
    assert low == pytest.approx(11 / 1001) and high == pytest.approx(low + (1000 - d.resamples) / 1001)
    [full] = watermark.detect(None, [[3, 1, 4, 1, 5, 9, 2, 6]], key="k", vocab_size=50, stop_after=None)
    assert not full.stopped_early and full.resamples == 1000
    assert full.p_value_bounds[0] == full.p_value_bounds[1] == full.p_value
    assert low <= full.p_value <= high  # the bounds bracket what all resamples give


def test_pvalues_unchanged_where_early_stopping_does_not_trigger():
    """Default early stopping vs the naive oracle running all resamples: identical wherever a text has
    fewer than stop_after hits, and equal to the naive sequential rule everywhere."""
    rng = np.random.default_rng(0)
    token_lists, tables = _null_batch(rng, 24, 6, 11, 40)
    # plant the key in half the texts so that small p-values (no early stop) occur
    for tokens, (table, _, _) in zip(token_lists[::2], tables[::2]):
        inv = np.unique(tokens, return_inverse=True)[1]
        table[(np.arange(len(tokens)) + 3) % 11, inv] = 1 - 1e-6
    fast = align.fast_test(token_lists, mode=align.EXP, edit=True, key_tables=tables, vocab_size=40, n=11, k=None,
                           gap_cost=0.0, resamples=60, seed=5, stop_after=DEFAULT_STOP_AFTER)
    untouched = 0
    for i, (tokens, table) in enumerate(zip(token_lists, tables)):
        kwargs = dict(mode=align.EXP, edit=True, key_table=table, vocab_size=40, n=11, k=None, gap_cost=0.0,
                      resamples=60, seed=5)
        stat, p_all = align.naive_test(list(tokens), **kwargs)
        assert fast.statistics[i] == stat
        if fast.hits[i] < DEFAULT_STOP_AFTER:
            untouched += 1
            assert fast.p_values[i] == p_all and fast.resamples[i] == 60
        else:
            assert fast.p_values[i] == align.naive_test(list(tokens), stop_after=DEFAULT_STOP_AFTER, **kwargs)[1]
    assert 0 < untouched < 24  # both cases are exercised


def test_default_pvalues_are_calibrated_under_the_null():
    """3,000 independent null texts with the default test (1,000 resamples, stop at 10 hits): the rejection
    rates at 0.01 and 0.05 lie in the central 99.9% of Binomial(3000, alpha). Negative control: a stopping
    bug (stopped texts reporting hits / (T + 1), as if every resample had run) is far outside."""
    rng = np.random.default_rng(1)
    token_lists, tables = _null_batch(rng, 3000, 8, 16, 5000)
    result = align.fast_test(token_lists, mode=align.EXP, edit=True, key_tables=tables, vocab_size=5000, n=16, k=None,
                             gap_cost=0.0, resamples=DEFAULT_RESAMPLES, seed=2, stop_after=DEFAULT_STOP_AFTER)
    assert result.resamples.mean() < 150  # early stopping did its job
    stopped = result.hits >= DEFAULT_STOP_AFTER
    wrong = np.where(stopped, result.hits / (DEFAULT_RESAMPLES + 1.0), result.p_values)
    for alpha in (0.01, 0.05):
        low, high = stats.binom.ppf(0.0005, 3000, alpha), stats.binom.isf(0.0005, 3000, alpha)
        assert low <= np.sum(result.p_values <= alpha) <= high, alpha
        assert not low <= np.sum(wrong <= alpha) <= high


def test_cli_defaults_and_all_resamples(tmp_path, capsys):
    path = tmp_path / "texts.json"
    path.write_text(json.dumps([[7, 8, 9, 10, 11, 12, 13, 14]]))
    base = ["watermark", "detect", "--key", "k", "--model", "tiny-random", str(path)]
    assert cli_main(base) == 0
    [line] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    [expected] = watermark.detect(dl.load("tiny-random"), [[7, 8, 9, 10, 11, 12, 13, 14]], key="k")
    assert line["p_value"] == expected.p_value and line["stopped_early"] and line["hits"] == 10
    assert line["p_value_bounds"] == list(expected.p_value_bounds)
    assert cli_main(base + ["--all-resamples", "--resamples", "99"]) == 0
    [line] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert line["resamples"] == 99 and not line["stopped_early"]
    with pytest.raises(SystemExit) as exit_code:  # argparse refuses it: one line, exit 2
        cli_main(base + ["--stop-after", "-1"])
    assert exit_code.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --stop-after") and err.count("\n") == 1


def test_server_detect_endpoint_uses_the_same_defaults():
    from fastapi.testclient import TestClient

    from decodelab.server import create_app

    lm = dl.load("tiny-random", vocab_size=64)
    client = TestClient(create_app({"tiny-random": lm}))
    texts = [[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16, 17]]
    reply = client.post("/v1/decodelab/watermark/detect", json={"texts": texts, "key": "k"})
    assert reply.status_code == 200, reply.text
    expected = watermark.detect(lm, texts, key="k")
    assert [r["p_value"] for r in reply.json()["data"]] == [d.p_value for d in expected]
    assert all(r["stopped_early"] for r in reply.json()["data"])
    reply = client.post("/v1/decodelab/watermark/detect",
                        json={"texts": texts, "key": "k", "stop_after": None, "resamples": 50})
    assert [r["resamples"] for r in reply.json()["data"]] == [50, 50]
    for bad in ({"resamples": -1}, {"stop_after": 10**9}, {"texts": []}, {"key": ""}, {"texts": [[5, 64]]}):
        reply = client.post("/v1/decodelab/watermark/detect", json={"texts": texts, "key": "k", **bad})
        assert reply.status_code == 400, (bad, reply.text)
        assert "error" in reply.json()


def test_progress_bar_reports_texts_per_second(capsys):
    watermark.detect(None, [[1, 2, 3, 4]] * 3, key="k", vocab_size=50, resamples=30, progress=True)
    err = capsys.readouterr().err
    assert "texts/s" in err and "3/3 texts" in err
    watermark.detect(None, [[1, 2, 3, 4]] * 3, key="k", vocab_size=50, resamples=30)  # not a terminal: no bar
    assert "texts/s" not in capsys.readouterr().err


def test_numba_cache_dir_falls_back_to_a_writable_place(monkeypatch, tmp_path):
    assert jitcache.choose_cache_dir(["/a", "/b", "/c"], lambda p: p != "/a") == "/b"
    assert jitcache.choose_cache_dir(["/a"], lambda p: False) is None
    assert jitcache.writable(str(tmp_path / "new")) and not jitcache.writable("/proc/no-such-dir")
    monkeypatch.setattr(jitcache.numba_config, "CACHE_DIR", "")
    monkeypatch.setattr(jitcache, "writable", lambda p: p.startswith(jitcache.tempfile.gettempdir()))
    monkeypatch.setattr(jitcache.tempfile, "gettempdir", lambda: str(tmp_path))
    chosen = jitcache.ensure_cache_dir()  # package dir and user cache dir unwritable: numba is pointed at tmp
    assert chosen.startswith(str(tmp_path)) and jitcache.numba_config.CACHE_DIR == chosen
