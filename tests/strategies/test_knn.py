"""kNN-LM: the model alone at lam = 0; with lam = 1 and one neighbour it recites its datastore
(each context's nearest stored state is its own); datastores build, save and load from the CLI;
the server reads only named datastores."""

from __future__ import annotations

import json

import pytest

import decodelab as dl
from decodelab.cli import main as cli_main
from decodelab.strategies.knn import Datastore, resolve_datastore

pytest.importorskip("faiss")

TEXT = "the quick brown fox jumps over the lazy dog while seven wizards quietly hex a jovial king"


@pytest.fixture(scope="module")
def lm(lm2):
    return lm2


@pytest.fixture(scope="module")
def store_dir(lm, tmp_path_factory):
    return Datastore.build(lm, [TEXT]).save(tmp_path_factory.mktemp("knn") / "store")


def test_lam_zero_is_the_model_alone(lm, store_dir):
    prompts = [[1, 4, 5, 6, 7], [1, 9, 2]]
    plain = dl.generate(lm, prompts, max_new_tokens=8, temperature=0)
    knn = dl.generate(lm, prompts, max_new_tokens=8, temperature=0, strategy="knn-lm",
                      strategy_options={"datastore": str(store_dir), "lam": 0})
    assert [o.token_ids for o in knn] == [o.token_ids for o in plain]


def test_one_neighbour_at_full_weight_recites_the_datastore(lm, store_dir):
    ids = lm.tokenizer.encode(TEXT, add_special_tokens=False)
    prompts = [ids[:10], ids[:25]]
    outs = dl.generate(lm, prompts, max_new_tokens=12, temperature=0, strategy="knn-lm",
                       strategy_options={"datastore": str(store_dir), "lam": 1.0, "k": 1})
    for prompt, out in zip(prompts, outs):
        assert out.token_ids == ids[len(prompt):len(prompt) + 12]
        report = out.results["knn-lm"]
        assert report["datastore_size"] == len(ids) - 1
        assert report["mean_entropy_knn_lm"] < 1e-3 < report["mean_entropy_lm"]  # one neighbour: a point mass
    plain = dl.generate(lm, prompts, max_new_tokens=12, temperature=0)
    assert [o.token_ids for o in plain] != [o.token_ids for o in outs]


def test_cli_builds_a_datastore_that_generate_uses(tmp_path, capsys, lm):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    out = tmp_path / "cli-store"
    assert cli_main(["knn", "build", str(out), "--model", "tiny-random", "--text", str(corpus)]) == 0
    meta = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert meta["size"] > 10 and (out / "index.faiss").is_file()
    target = dl.load("tiny-random")
    got = dl.generate(target, "the quick", chat=False, max_new_tokens=4, temperature=0, strategy="knn-lm",
                      strategy_options={"datastore": str(out), "lam": 0.5})
    assert got.results["knn-lm"]["datastore_size"] == meta["size"]


def test_bad_datastores_are_rejected(lm, store_dir, tmp_path):
    with pytest.raises(dl.InvalidOption, match="not a named datastore"):
        resolve_datastore(lm, str(store_dir), served=True)
    with pytest.raises(dl.InvalidOption, match="not a datastore"):
        dl.generate(lm, "ab", strategy="knn-lm", strategy_options={"datastore": str(tmp_path / "missing")})
    with pytest.raises(dl.InvalidOption, match="datastore is required"):
        dl.generate(lm, "ab", strategy="knn-lm")
    other = dl.load("tiny-random", vocab_size=32)
    with pytest.raises(dl.InvalidOption, match="built with"):
        dl.generate(other, "ab", strategy="knn-lm", strategy_options={"datastore": str(store_dir)})
