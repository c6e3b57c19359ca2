"""A verify forward of n tokens computes what n one-token steps compute, bit for bit.

At the packed-kernel precisions ("auto", "int4", "int8": bfloat16 activations) this is what makes
greedy speculative decoding give plain greedy's tokens, and speculative sampling use plain
decoding's distribution, for a single row (padded batches and token trees attend through masks).
"""

from __future__ import annotations

import pytest
import torch

import decodelab as dl
from decodelab.corpus import suite_texts
from decodelab.engine import Sequence
from decodelab.models.attention import STEP_CONSISTENT_ATTENTION

PROMPT = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"


def _logits_by_steps_and_at_once(lm: dl.LM, prompt_ids: list[int], new: list[int]):
    steps = Sequence(lm, [prompt_ids])
    steps.prefill()
    one_by_one = torch.cat([steps.forward([[t]]) for t in new], 1)
    at_once = Sequence(lm, [prompt_ids])
    at_once.prefill()
    return one_by_one, at_once.forward([new])


def _tree_logits_equal_path_steps(lm: dl.LM, prompt_ids: list[int], tokens: list[int], parents: list[int]) -> bool:
    """Logits of every tree node (one tree forward) equal the last logits of stepping its root path."""
    tree = Sequence(lm, [prompt_ids])
    tree.prefill()
    at_once = tree.forward_tree([tokens], parents)[0]
    for node in range(len(tokens)):
        path = [node]
        while parents[path[-1]] >= 0:
            path.append(parents[path[-1]])
        steps = Sequence(lm, [prompt_ids])
        steps.prefill()
        for t in reversed(path):
            last = steps.forward([[tokens[t]]])[0, -1]
        if not torch.equal(last, at_once[node]):
            return False
    return True


def _speculative_run_equals_steps(lm: dl.LM, prompt_ids: list[int], seed: int, rounds: int = 12) -> bool:
    """A decode the way speculative methods drive the engine -- token trees of random shapes and
    sizes (one node included), chains, keeping one root path each time -- leaves logits and cache
    equal, bit for bit, to plain one-token steps over the same tokens."""
    generator = torch.Generator().manual_seed(seed)
    vocab = lm.vocab_size
    spec, kept, kept_logits = Sequence(lm, [prompt_ids]), [], []
    spec.prefill()
    for round_ in range(rounds):
        size = int(torch.randint(1, 7, (1,), generator=generator))
        tokens = torch.randint(1, vocab, (size,), generator=generator).tolist()
        if round_ % 4 == 3:  # a chain, as prompt lookup and draft models send it
            logits = spec.forward([tokens])[0]
            path = list(range(size))
        else:
            parents = [-1] + [int(torch.randint(0, i, (1,), generator=generator)) for i in range(1, size)]
            logits = spec.forward_tree([tokens], parents)[0]
            path = [int(torch.randint(0, size, (1,), generator=generator))]
            while parents[path[-1]] >= 0:
                path.append(parents[path[-1]])
            path.reverse()
            spec.keep_tree_path([path])
        kept += [tokens[node] for node in path]
        kept_logits += [logits[node] for node in path]
    plain = Sequence(lm, [prompt_ids])
    plain.prefill()
    return all(torch.equal(plain.forward([[token]])[0, -1], expected) for token, expected in zip(kept, kept_logits))


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_tiny_model_verify_equals_steps(weights):
    """At the packed-kernel precisions (row-invariant linears). bf16 and fp32 weights run GEMMs whose
    rounding depends on the row count, so there only attention is step-consistent."""
    lm = dl.load("tiny-random", vocab_size=96, weights=weights)
    assert lm.model.config._attn_implementation == STEP_CONSISTENT_ATTENTION
    generator = torch.Generator().manual_seed(3)
    for n in (2, 5, 9):
        ids = torch.randint(1, 96, (40 + n,), generator=generator).tolist()
        steps, at_once = _logits_by_steps_and_at_once(lm, ids[:40], ids[40:])
        assert torch.equal(steps, at_once), n
    # a token tree: each node sees the cache and its ancestors, as the plain step after its path would
    assert _tree_logits_equal_path_steps(lm, ids[:40], [7, 8, 9, 10, 11, 12], [-1, 0, 0, 1, 2, 2])
    assert _tree_logits_equal_path_steps(lm, ids[:40], [7], [-1])  # a one-node tree (adaptive sizes send it)
    assert _speculative_run_equals_steps(lm, ids[:40], seed=5)


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["auto", "int4"])
def test_smollm2_verify_equals_steps_and_plain_sdpa_does_not(weights):
    """On the packaged model at its quantized precisions; the negative control is the same forward
    with Hugging Face's SDPA, which rounds an n-query call differently from a one-query call."""
    lm = dl.load(weights=weights)
    ids = lm.tokenizer(PROMPT)["input_ids"]
    new = lm.tokenizer(" if n < 2:\n        return n\n    return")["input_ids"][:6]
    steps, at_once = _logits_by_steps_and_at_once(lm, ids, new)
    assert torch.equal(steps, at_once)
    tree = (new[:5], [-1, 0, 1, 0, 3])
    assert _tree_logits_equal_path_steps(lm, ids, *tree)
    # over a long natural-text context (SDPA with a mask rounded a one-node tree otherwise than the
    # unmasked step there, not over a short one): a one-node tree, then trees, chains and kept paths
    long_ids = lm.tokenizer("\n\n".join(suite_texts("specbench_mini")[:12]))["input_ids"][:900]
    assert _tree_logits_equal_path_steps(lm, long_ids, new[:1], [-1])
    assert _speculative_run_equals_steps(lm, long_ids, seed=11, rounds=16)
    lm.model.config._attn_implementation = "sdpa"
    try:
        steps, at_once = _logits_by_steps_and_at_once(lm, ids, new)
        tree_caught = not _tree_logits_equal_path_steps(lm, ids, *tree)
    finally:
        lm.model.config._attn_implementation = STEP_CONSISTENT_ATTENTION
    assert not torch.equal(steps, at_once) and tree_caught


def test_prefill_and_masked_batches_are_unchanged(tiny_lm):
    """Prefill and padded batches still go through SDPA as before: same logits as HF's own SDPA."""
    rows = [[5, 6, 7, 8, 9], [11, 12]]
    ours = Sequence(tiny_lm, rows)
    last = ours.prefill()
    tiny_lm.model.config._attn_implementation = "sdpa"
    try:
        theirs = Sequence(tiny_lm, rows)
        reference = theirs.prefill()
    finally:
        tiny_lm.model.config._attn_implementation = STEP_CONSISTENT_ATTENTION
    assert torch.equal(last, reference)


def test_every_verify_size_is_step_consistent():
    from decodelab.models.attention import STEP_CONSISTENT_MAX_QUERIES
    from decodelab.speculative.tree_shape import MAX_TREE_NODES

    assert STEP_CONSISTENT_MAX_QUERIES >= MAX_TREE_NODES + 1
