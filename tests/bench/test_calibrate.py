"""LayerSkip calibration (a bench measurement): every candidate depth is measured and the fastest kept."""

import decodelab as dl
from decodelab.bench import calibrate_layer_skip
from decodelab.speculative.layer_skip import LayerSkip


def test_calibrate_layer_skip_keeps_the_fastest_measured_depth():
    lm = dl.load("tiny-random", vocab_size=64, num_layers=4, seed=0)
    prompts = [[1, 5, 6, 7], [1, 9, 10]]
    spec, table = calibrate_layer_skip(lm, prompts, candidates=[1, 2, 3], k=3, max_new_tokens=6)
    assert sorted(table) == [1, 2, 3]
    assert all(row["tokens_per_second"] > 0 and 0 <= row["acceptance"] <= 1 for row in table.values())
    assert isinstance(spec, LayerSkip) and spec.layers == max(table, key=lambda d: table[d]["tokens_per_second"])
    plain = dl.generate(lm, prompts[0], max_new_tokens=6, temperature=0)
    assert dl.generate(lm, prompts[0], speculative=spec, max_new_tokens=6, temperature=0).token_ids == plain.token_ids
