"""`--weights` on the CLI surfaces, and the t(n) cache keyed by precision."""

from __future__ import annotations

import decodelab as dl
from decodelab.cli import main
from decodelab.speculative.cost import _cache_file


def test_generate_runs_at_int4_and_rejects_unknown_weights(capsys):
    code = main(["generate", "--model", "tiny-random", "--weights", "int4", "--max-new-tokens", "4",
                 "--temperature", "0", "hello"])
    assert code == 0 and capsys.readouterr().out.strip()
    code = main(["generate", "--model", "tiny-random", "--weights", "int3", "--max-new-tokens", "4", "hello"])
    assert code == 2 and "weights must be one of" in capsys.readouterr().err


def test_bench_and_serve_take_weights():
    from decodelab.bench.cli import _load_model
    from decodelab.server.cli import load_models

    assert _load_model("tiny-random", None, "int8").weights == "int8"
    models, _ = load_models(["tiny-random"], weights="bf16")
    assert models["tiny-random"].weights == "bf16"


def test_verify_cost_cache_is_kept_per_weight_precision():
    fp32 = dl.load("tiny-random", vocab_size=64)
    int4 = dl.load("tiny-random", vocab_size=64, weights="int4")
    assert _cache_file(fp32, 256) != _cache_file(int4, 256)
