"""CoIn-style audit: the hash tree binds tokens and count; genuine traces pass at the nominal level;
inflated traces are caught; the uncorrected minimum p-value (the broken variant) over-rejects."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import decodelab as dl
from decodelab.provenance.coin import (
    Auditor,
    audit,
    calibration_blocks,
    commit,
    inflate,
    open_blocks,
    sample_starts,
    verify_block,
)

WIDTH, BLOCKS = 16, 4


@pytest.mark.parametrize("count", [1, 2, 3, 7, 16, 33])
def test_every_opened_block_verifies_and_tampering_does_not(count):
    ids = list(range(100, 100 + count))
    c = commit(ids, b"k")
    for block in open_blocks(ids, b"k", starts=range(count), width=3):
        assert verify_block(c, block)
        block.token_ids[0] += 1
        assert not verify_block(c, block)
    (block,) = open_blocks(ids, b"k", starts=[0], width=1)
    assert not verify_block(dl.provenance.coin.Commitment(c.root, count + 1), block)  # an inflated count
    assert commit(ids, b"other").root != c.root


def _traces(trained, n, seed=0):
    """Genuine hidden traces: held-out text of the model's training distribution, token ids."""
    texts = trained.non_members
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        picks = rng.choice(len(texts), 3, replace=False)
        out.append(list(trained.lm.tokenizer(" ".join(texts[i] for i in picks), add_special_tokens=False)["input_ids"]))
    return out


@pytest.fixture(scope="module")
def auditor(trained):
    return Auditor(trained.lm, [("", t) for t in _traces(trained, 60, seed=1)], blocks=BLOCKS, width=WIDTH)


def _audit(auditor, trace, seed):
    starts = sample_starts(len(trace), BLOCKS, WIDTH, seed)
    return auditor.audit("", [trace[s:s + WIDTH] for s in starts])


@pytest.fixture(scope="module")
def genuine(trained, auditor):
    return [_audit(auditor, t, 1000 + i) for i, t in enumerate(_traces(trained, 100, seed=2))]


def test_audit_function_matches_the_auditor(trained, auditor):
    trace = _traces(trained, 1, seed=5)[0]
    calibration = [("", t) for t in _traces(trained, 60, seed=1)]
    starts = sample_starts(len(trace), BLOCKS, WIDTH, 7)
    blocks = [trace[s:s + WIDTH] for s in starts]
    assert audit(trained.lm, "", blocks, calibration, blocks=BLOCKS, width=WIDTH).p_value == pytest.approx(
        auditor.audit("", blocks).p_value)


def test_genuine_traces_pass_at_the_nominal_level(genuine):
    results = genuine
    p = np.array([r.p_value for r in results])
    assert stats.binomtest(int((p <= 0.1).sum()), len(p), 0.1, alternative="greater").pvalue > 1e-3
    first = [r.block_p_values[0] for r in results]  # one block's p-value is uniform
    assert stats.kstest(first, "uniform").pvalue > 1e-3


def test_the_uncorrected_minimum_over_blocks_over_rejects(genuine):
    """Negative control: taking min p without the Bonferroni factor rejects genuine traces far more
    often than the nominal level; the same binomial check sees it."""
    p = np.array([min(r.block_p_values) for r in genuine])
    assert stats.binomtest(int((p <= 0.1).sum()), len(p), 0.1, alternative="greater").pvalue < 1e-3


def _inflated_p_values(trained, auditor, kind):
    """Half of the billed tokens are filler (fraction 1.0 of the genuine count added)."""
    ps = []
    for i, trace in enumerate(_traces(trained, 30, seed=3)):
        inflated = inflate(trace, 1.0, kind=kind, vocab_size=trained.lm.vocab_size, seed=i)
        ps.append(_audit(auditor, inflated, 2000 + i).p_value)
    return np.array(ps)


def test_random_token_filler_is_caught(trained, auditor):
    assert np.mean(_inflated_p_values(trained, auditor, "random") <= 0.05) >= 0.5


def test_shuffled_filler_lowers_p_values(trained, auditor, genuine):
    """Filler with the trace's own token statistics is harder for a likelihood statistic (and this
    tiny character model): the p-values still sit well below the genuine traces'."""
    shuffled = _inflated_p_values(trained, auditor, "shuffled")
    assert np.median(shuffled) < 0.5 * np.median([r.p_value for r in genuine])


def test_calibration_blocks_follow_the_audit_sampling():
    blocks = calibration_blocks([list(range(40))], width=8, per_trace=3, seed=0)
    assert len(blocks) == 3 and all(len(b) == 8 and b[0] % 8 == 0 for b in blocks)


def test_bad_input_is_a_typed_error(trained):
    with pytest.raises(dl.InvalidOption, match="no hidden tokens"):
        commit([], b"k")
    with pytest.raises(dl.InvalidOption, match="outside"):
        open_blocks([1, 2], b"k", starts=[5], width=1)
    with pytest.raises(dl.InvalidOption, match="calibration"):
        audit(trained.lm, "", [[5, 6]], [])
    with pytest.raises(dl.InvalidOption, match="blocks"):
        audit(trained.lm, "", [], [("", [5, 6, 7])])
    with pytest.raises(dl.InvalidOption, match="width"):
        audit(trained.lm, "", [[5]], [("", [5, 6, 7])], width=0)
    with pytest.raises(dl.InvalidOption, match="kind"):
        inflate([1, 2], 0.5, kind="other", vocab_size=10)


def test_min_p_value_is_the_resolution_of_the_bonferroni_rank_test(genuine):
    r = genuine[0]
    assert r.min_p_value == pytest.approx(min(1.0, BLOCKS / (r.calibration_blocks + 1)))
    assert all(g.p_value >= g.min_p_value - 1e-12 for g in genuine)
