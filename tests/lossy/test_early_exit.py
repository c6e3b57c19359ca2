"""SkipDecode's schedule is monotonic, and an exit whose depth fell still computes what a fresh
shallow model computes (its cache keeps the right layers)."""

from __future__ import annotations

import torch

import decodelab as dl
from decodelab.lossy.early_exit import exit_depth
from decodelab.speculative import derive_lm

PROMPT = [1, 5, 6, 5, 6, 5]


def test_exit_depth_never_rises_and_spans_the_range():
    depths = [exit_depth(t, 20, 7, 2) for t in range(25)]
    assert depths[0] == 7 and depths[-1] == 2
    assert all(a >= b for a, b in zip(depths, depths[1:]))


def test_every_token_comes_from_the_exit_of_its_position(target):
    """Greedy, k=1, min_confidence=0: token t is the argmax of the depth-L(t) exit over the text so
    far (the last token, which has no room for a draft, comes from the full model). Compared with
    fresh forwards of each shallow model, so a stale or misaligned exit cache would show."""
    n = 10
    out = dl.generate(target, PROMPT, speculative="lossy-early-exit", max_new_tokens=n, temperature=0,
                      speculative_options={"k": 1, "max_layers": 4, "min_layers": 1, "min_confidence": 0.0})
    exits = {d: derive_lm(target, num_layers=d) for d in range(1, 5)}
    expected: list[int] = []
    for t in range(n):
        model = target if t == n - 1 else exits[exit_depth(t, n, 4, 1)]
        with torch.inference_mode():
            logits = model.model(torch.tensor([PROMPT + expected])).logits[0, -1]
        expected.append(int(logits.argmax()))
        if expected[-1] in target.eos_token_ids:
            break
    assert out.token_ids == expected
    assert len({exit_depth(t, n, 4, 1) for t in range(n)}) == 4  # the run crossed every depth
