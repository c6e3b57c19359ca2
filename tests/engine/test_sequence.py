"""The engine's KV cache is invisible: every logit `Sequence` returns equals a fresh forward.

Each test compares logits from cache surgery (chain forward, rollback, per-row rollback in a
left-padded batch, tree forward, keeping a tree path, selecting rows) with a plain forward of
the same token sequence from scratch, without cache, padding or masks (atol 1e-4). A control
test shows that this comparison sees a wrong mask or position (differences >> 1e-4).
"""

from __future__ import annotations

import os

import pytest
import torch

import decodelab as dl
from decodelab.engine import Sequence, path_to

ATOL = 1e-4
RTOL = 1e-5  # float32 noise grows with the logit's size (SmolLM2's logits reach ~20)
if os.environ.get("DECODELAB_TEST_WEIGHTS", "fp32") != "fp32":
    # bfloat16 activations (DECODELAB_TEST_WEIGHTS=int4/int8/bf16): a few bf16 ulps of the logits;
    # a wrong mask or position moves tiny-random's logits by ~4 (checked), far more
    ATOL, RTOL = 0.15, 2e-2


def fresh(lm: dl.LM, ids: list[int]) -> torch.Tensor:
    """Logits [len(ids), V] of one sequence from scratch."""
    with torch.inference_mode():
        return lm.model(torch.tensor([ids], device=lm.device)).logits[0].float()


def assert_close(got: torch.Tensor, want: torch.Tensor, what: str = "") -> None:
    """|got - want| <= 1e-4 + 1e-5 |want| everywhere (tiny-random's logits are O(1), so 1e-4 there)."""
    got, want = got.float(), want.float()
    excess = float(((got - want).abs() - RTOL * want.abs()).max())
    diff = float((got - want).abs().max())
    assert excess < ATOL, f"{what}: max |logit difference| {diff:.2e} exceeds {ATOL} + {RTOL}|logit|"


def random_ids(n: int, vocab: int, seed: int, low: int = 3) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, vocab, (n,), generator=g).tolist()


TREES = {
    "chain": [-1, 0, 1, 2],
    "star": [-1, -1, -1, -1],
    "binary": [-1, 0, 0, 1, 1, 2, 2],
    "irregular": [-1, 0, -1, 1, 0, 3, 2, 2, 6],
}


def check_tree(seq: Sequence, lm: dl.LM, parents: list[int], seed: int) -> torch.Tensor:
    """Forward a tree on every row and compare each node with a fresh forward of its path."""
    n = len(parents)
    tokens = [random_ids(n, lm.vocab_size, seed + b) for b in range(seq.batch_size)]
    contexts = [list(ids) for ids in seq.ids]
    logits = seq.forward_tree(tokens, parents)
    assert logits.shape == (seq.batch_size, n, lm.vocab_size)
    for b in range(seq.batch_size):
        for node in range(n):
            path = [tokens[b][i] for i in path_to(parents, node)]
            assert_close(logits[b, node], fresh(lm, contexts[b] + path)[-1], f"row {b} node {node}")
    return torch.tensor(tokens)


# --------------------------------------------------------------------------- chains and rollback
def test_chain_forward_equals_fresh_forward(tiny_lm64):
    lm = tiny_lm64
    prompt = random_ids(9, lm.vocab_size, 0)
    seq = Sequence(lm, [prompt])
    assert_close(seq.prefill()[0], fresh(lm, prompt)[-1], "prefill")
    more = random_ids(4, lm.vocab_size, 1)
    out = seq.forward([more])
    assert out.shape == (1, 4, lm.vocab_size)
    assert_close(out[0], fresh(lm, prompt + more)[-4:], "chain")
    one = random_ids(1, lm.vocab_size, 2)
    assert_close(seq.forward([one])[0, 0], fresh(lm, prompt + more + one)[-1], "single token")
    assert seq.ids == [prompt + more + one]
    assert seq.lengths() == [14]
    assert seq.forward_calls == 3


def test_last_only_forward_returns_the_last_position(tiny_lm64):
    lm = tiny_lm64
    prompt = random_ids(5, lm.vocab_size, 3)
    seq = Sequence(lm, [prompt])
    seq.prefill()
    more = random_ids(3, lm.vocab_size, 4)
    out = seq.forward([more], last_only=True)
    assert out.shape == (1, 1, lm.vocab_size)
    assert_close(out[0, 0], fresh(lm, prompt + more)[-1])


@pytest.mark.parametrize("n", [1, 3, 7])
def test_rollback_then_forward_equals_fresh_forward(tiny_lm64, n):
    lm = tiny_lm64
    prompt = random_ids(6, lm.vocab_size, 5)
    seq = Sequence(lm, [prompt])
    seq.prefill()
    drafts = random_ids(7, lm.vocab_size, 6)
    seq.forward([drafts])
    seq.rollback(n)
    kept = prompt + drafts[: 7 - n]
    assert seq.ids == [kept] and seq.lengths() == [len(kept)]
    assert seq.cache.get_seq_length() == len(kept), "rolled-back slots must leave the cache"
    other = random_ids(3, lm.vocab_size, 7)
    assert_close(seq.forward([other])[0], fresh(lm, kept + other)[-3:], f"after rollback({n})")


def test_rollback_into_the_prompt_and_repeatedly(tiny_lm64):
    lm = tiny_lm64
    prompt = random_ids(8, lm.vocab_size, 8)
    seq = Sequence(lm, [prompt])
    seq.prefill()
    seq.rollback(5)  # into the prompt: only 3 tokens left
    x = random_ids(2, lm.vocab_size, 9)
    assert_close(seq.forward([x])[0], fresh(lm, prompt[:3] + x)[-2:])
    seq.rollback(1)
    seq.rollback(0)
    y = random_ids(4, lm.vocab_size, 10)
    assert_close(seq.forward([y])[0], fresh(lm, prompt[:3] + x[:1] + y)[-4:])


def test_rollback_rejects_bad_counts(tiny_lm64):
    seq = Sequence(tiny_lm64, [[3, 4, 5]])
    seq.prefill()
    with pytest.raises(ValueError):
        seq.rollback(3)  # would leave an empty row
    with pytest.raises(ValueError):
        seq.rollback([1, 1])  # one count per row
    with pytest.raises(ValueError):
        seq.rollback([-1])


def left_padded_batch(lm: dl.LM) -> Sequence:
    rows = [random_ids(n, lm.vocab_size, 20 + n) for n in (3, 8, 5)]
    seq = Sequence(lm, rows)
    last = seq.prefill()
    for b, row in enumerate(rows):
        assert_close(last[b], fresh(lm, row)[-1], f"prefill row {b}")
    return seq


def test_left_padded_batch_chain_equals_fresh_per_row(tiny_lm64):
    lm = tiny_lm64
    seq = left_padded_batch(lm)
    chain = [random_ids(4, lm.vocab_size, 30 + b) for b in range(3)]
    out = seq.forward(chain)
    for b in range(3):
        assert_close(out[b], fresh(lm, seq.ids[b])[-4:], f"row {b}")


def test_per_row_rollback_in_left_padded_batch(tiny_lm64):
    lm = tiny_lm64
    seq = left_padded_batch(lm)
    seq.forward([random_ids(4, lm.vocab_size, 40 + b) for b in range(3)])
    before = [list(r) for r in seq.ids]
    seq.rollback([1, 3, 0])
    assert seq.ids == [before[0][:-1], before[1][:-3], before[2]]
    assert seq.has_holes()
    nxt = [random_ids(2, lm.vocab_size, 50 + b) for b in range(3)]
    out = seq.forward(nxt)
    for b in range(3):
        assert_close(out[b], fresh(lm, seq.ids[b])[-2:], f"row {b} after per-row rollback")
    # a second round puts holes in the middle of the cache
    seq.rollback([2, 0, 1])
    out = seq.forward([random_ids(3, lm.vocab_size, 60 + b) for b in range(3)])
    for b in range(3):
        assert_close(out[b], fresh(lm, seq.ids[b])[-3:], f"row {b} after second rollback")


# --------------------------------------------------------------------------- trees
@pytest.mark.parametrize("shape", list(TREES))
def test_tree_forward_equals_fresh_forward_of_each_path(tiny_lm64, shape):
    lm = tiny_lm64
    prompt = random_ids(6, lm.vocab_size, 70)
    seq = Sequence(lm, [prompt])
    seq.prefill()
    check_tree(seq, lm, TREES[shape], seed=71)


@pytest.mark.parametrize("shape", ["binary", "irregular"])
def test_tree_forward_in_a_padded_batch_with_holes(tiny_lm64, shape):
    lm = tiny_lm64
    seq = left_padded_batch(lm)
    seq.forward([random_ids(3, lm.vocab_size, 80 + b) for b in range(3)])
    seq.rollback([2, 0, 1])
    check_tree(seq, lm, TREES[shape], seed=90)


def test_tree_mask_hides_siblings_control(tiny_lm64):
    """Control: the comparison has power. A node's logits differ clearly (>> 1e-4) from a
    forward that also sees its sibling, or that sits one position later."""
    lm = tiny_lm64
    prompt = random_ids(6, lm.vocab_size, 100)
    seq = Sequence(lm, [prompt])
    seq.prefill()
    parents = [-1, -1]
    tokens = random_ids(2, lm.vocab_size, 101)
    logits = seq.forward_tree([tokens], parents)
    assert_close(logits[0, 1], fresh(lm, prompt + [tokens[1]])[-1])
    seen_sibling = fresh(lm, prompt + tokens)[-1]
    assert float((logits[0, 1] - seen_sibling).abs().max()) > 1e-2
    shifted = fresh(lm, prompt + [prompt[-1], tokens[1]])[-1]
    assert float((logits[0, 1] - shifted).abs().max()) > 1e-2


@pytest.mark.parametrize("node", [0, 4, 8])
def test_keep_tree_path_then_continue(tiny_lm64, node):
    lm = tiny_lm64
    parents = TREES["irregular"]
    prompt = random_ids(7, lm.vocab_size, 110)
    seq = Sequence(lm, [prompt])
    seq.prefill()
    tokens = check_tree(seq, lm, parents, seed=111)
    path = path_to(parents, node)
    seq.keep_tree_path([path])
    kept = prompt + tokens[0, path].tolist()
    assert seq.ids == [kept]
    assert seq.cache.get_seq_length() == len(kept)
    nxt = random_ids(3, lm.vocab_size, 112)
    assert_close(seq.forward([nxt])[0], fresh(lm, kept + nxt)[-3:], f"after keeping path to {node}")
    # and another tree on top of the kept path
    check_tree(seq, lm, TREES["binary"], seed=113)


def test_keep_different_paths_per_row_then_continue(tiny_lm64):
    lm = tiny_lm64
    parents = TREES["irregular"]
    seq = left_padded_batch(lm)
    tokens = check_tree(seq, lm, parents, seed=120)
    contexts = [list(r) for r in seq.ids]
    paths = [path_to(parents, 5), [], path_to(parents, 8)]  # depth 4, nothing, depth 3 (via root 2)
    seq.keep_tree_path(paths)
    for b in range(3):
        assert seq.ids[b] == contexts[b] + tokens[b, paths[b]].tolist()
    out = seq.forward([random_ids(2, lm.vocab_size, 121 + b) for b in range(3)])
    for b in range(3):
        assert_close(out[b], fresh(lm, seq.ids[b])[-2:], f"row {b} after keeping its path")
    check_tree(seq, lm, TREES["star"], seed=130)


def test_keep_tree_path_rejects_a_non_path(tiny_lm64):
    seq = Sequence(tiny_lm64, [[3, 4, 5]])
    seq.prefill()
    seq.forward_tree([[6, 7, 8]], [-1, -1, 0])
    with pytest.raises(ValueError):
        seq.keep_tree_path([[1, 2]])  # node 2's parent is 0, not 1


def test_forward_tree_rejects_a_wrong_number_of_parents(tiny_lm64):
    seq = Sequence(tiny_lm64, [[3, 4, 5]])
    seq.prefill()
    with pytest.raises(ValueError):
        seq.forward_tree([[6, 7]], [-1])  # one parent per token


def test_forward_tree_rejects_a_parent_after_its_child(tiny_lm64):
    seq = Sequence(tiny_lm64, [[3, 4, 5]])
    seq.prefill()
    with pytest.raises(ValueError):
        seq.forward_tree([[6, 7]], [-1, 1])  # a node cannot be its own parent


# --------------------------------------------------------------------------- rows
def test_select_rows_then_continue(tiny_lm64):
    lm = tiny_lm64
    seq = left_padded_batch(lm)
    seq.forward([random_ids(2, lm.vocab_size, 140 + b) for b in range(3)])
    seq.rollback([0, 1, 1])
    ids = [list(r) for r in seq.ids]
    seq.select_rows([2, 0])  # drops the longest row: its padding-only columns go too
    assert seq.ids == [ids[2], ids[0]] and seq.batch_size == 2
    out = seq.forward([random_ids(3, lm.vocab_size, 150 + b) for b in range(2)])
    for b in range(2):
        assert_close(out[b], fresh(lm, seq.ids[b])[-3:], f"selected row {b}")
    seq.select_rows([1])
    assert not seq.has_holes()
    x = random_ids(2, lm.vocab_size, 160)
    assert_close(seq.forward([x])[0], fresh(lm, seq.ids[0])[-2:], "single remaining row")


# --------------------------------------------------------------------------- limits
def test_context_length_is_enforced():
    lm = dl.load("tiny-random", vocab_size=32, context_length=16)
    with pytest.raises(dl.PromptTooLong):
        Sequence(lm, [[5] * 17])
    seq = Sequence(lm, [[5] * 12])
    seq.prefill()
    assert seq.room() == 4
    seq.forward([[6, 7, 8]])
    with pytest.raises(dl.PromptTooLong):
        seq.forward([[6, 7]])
    with pytest.raises(dl.PromptTooLong):
        seq.forward_tree([[6, 7]], [-1, 0])  # depth 2 needs two positions
    seq.forward_tree([[6, 7, 8]], [-1, -1, -1])  # a star of depth 1 fits in the last position
    assert issubclass(dl.PromptTooLong, dl.DecodelabError)


def test_empty_rows_are_rejected(tiny_lm64):
    with pytest.raises(dl.InvalidPrompt):
        Sequence(tiny_lm64, [])
    with pytest.raises(dl.InvalidPrompt):
        Sequence(tiny_lm64, [[3, 4], []])


# --------------------------------------------------------------------------- SmolLM2
@pytest.fixture
def plain_linear():
    """The engine's few-row linear path only changes float32 rounding; surgery is checked without it."""
    from decodelab.engine import fast_linear

    previous = fast_linear.set_enabled(False)
    yield
    fast_linear.set_enabled(previous)


@pytest.mark.slow
def test_cache_surgery_on_smollm2(smol, plain_linear):
    lm = smol
    prompt = lm.encode("The quick brown fox", chat=False)
    other = lm.encode("Hello", chat=False)
    seq = Sequence(lm, [prompt, other])
    last = seq.prefill()
    assert_close(last[0], fresh(lm, prompt)[-1], "prefill row 0")
    assert_close(last[1], fresh(lm, other)[-1], "prefill row 1")
    chain = [lm.encode(" jumps over the", chat=False)[:3], lm.encode(", world!", chat=False)[:3]]
    out = seq.forward(chain)
    for b in range(2):
        assert_close(out[b], fresh(lm, seq.ids[b])[-3:], f"chain row {b}")
    seq.rollback([2, 1])
    parents = [-1, 0, -1, 1]  # two roots, a depth-3 branch: small, since each node costs a fresh forward
    tokens = [random_ids(len(parents), 5000, 200 + b, low=100) for b in range(2)]
    contexts = [list(r) for r in seq.ids]
    logits = seq.forward_tree(tokens, parents)
    for b in range(2):
        for node in range(len(parents)):
            path = [tokens[b][i] for i in path_to(parents, node)]
            assert_close(logits[b, node], fresh(lm, contexts[b] + path)[-1], f"tree row {b} node {node}")
    seq.keep_tree_path([path_to(parents, 3), path_to(parents, 2)])
    out = seq.forward([[100, 200], [300, 400]])
    for b in range(2):
        assert_close(out[b], fresh(lm, seq.ids[b])[-2:], f"after keep row {b}")


@pytest.mark.slow
def test_few_row_linear_path_matches_pytorch_linear_on_smollm2(smol):
    """The W @ x.T path for few-row forwards agrees with F.linear to float32 rounding."""
    from decodelab.engine import fast_linear

    prompt = smol.encode("The quick brown fox jumps over", chat=False)
    results = []
    for enabled in (True, False):
        previous = fast_linear.set_enabled(enabled)
        try:
            seq = Sequence(smol, [prompt[:-4]])
            seq.prefill()
            results.append(seq.forward([prompt[-4:]]))
        finally:
            fast_linear.set_enabled(previous)
    fast, slow = results
    assert float((fast - slow).abs().max()) < 1e-3
    assert torch.equal(fast.argmax(-1), slow.argmax(-1))
