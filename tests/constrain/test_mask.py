"""Locally constrained decoding (mask then sample) with llguidance grammars on tiny-random.

The claim: samples follow the locally renormalised law exactly (by enumeration, chi-square),
with plain decoding and with speculative drafts; every output satisfies its grammar; EOS is
allowed exactly when the text is complete; masks along token trees follow root paths.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch
from oracle import chi_square_pvalue, enumerate_laws

import decodelab as dl
from decodelab.constrain import GrammarConstraint, compile_grammar
from decodelab.constrain.grammar import fill_masks, masks_to_bool
from decodelab.speculative import DraftModel, DraftTree, PromptLookup, TokenRecycling

PASS_LEVEL = 1e-4
FAIL_LEVEL = 1e-6
PROMPT = [1, 4, 5, 6, 7]  # <bos> e t a o
REGEX = "(e|t|a)(n|s)?"  # complete after one letter, extendable by n/s: EOS matters


@pytest.fixture(scope="module")
def lm():
    return dl.load("tiny-random", vocab_size=16, init_std=0.3, seed=1)


@pytest.fixture(scope="module")
def lm80():
    """All of tiny-random's characters (digits, punctuation)."""
    return dl.load("tiny-random", vocab_size=80, init_std=0.3, seed=1)


@pytest.fixture(scope="module")
def draft():
    return dl.load("tiny-random", vocab_size=16, init_std=0.3, seed=5, num_layers=1)


def sample(lm, n, seed, **options):
    outs = dl.generate(lm, [PROMPT] * n, max_new_tokens=3, seed=seed, records=False, **options)
    return outs, Counter(tuple(o.token_ids) for o in outs)


@pytest.mark.parametrize("method", ["plain", "prompt-lookup", "draft", "draft-tree", "token-recycling"])
def test_masked_sampling_matches_the_local_law(lm, draft, method):
    local, _, _, _ = enumerate_laws(lm, PROMPT, compile_grammar(lm, regex=REGEX), 3, temperature=1.0)
    spec = {"plain": None, "prompt-lookup": PromptLookup(k=2, max_ngram=1), "draft": DraftModel(draft, k=2),
            "draft-tree": DraftTree(draft, branching=(3, 2)),
            "token-recycling": TokenRecycling(lm, width=4, nodes=8, adaptive=False)}[method]
    outs, counts = sample(lm, 3000, 7, regex=REGEX, temperature=1.0, speculative=spec)
    assert all(o.constraint_satisfied and o.finish_reason == "stop" for o in outs)
    assert chi_square_pvalue(counts, local) > PASS_LEVEL


def test_wrong_temperature_is_detected(lm):
    """Negative control: the same test rejects masked sampling at another temperature."""
    local, _, _, _ = enumerate_laws(lm, PROMPT, compile_grammar(lm, regex=REGEX), 3, temperature=1.0)
    _, counts = sample(lm, 3000, 7, regex=REGEX, temperature=1.6)
    assert chi_square_pvalue(counts, local) < FAIL_LEVEL


@pytest.mark.parametrize("kind,value,check", [
    ("regex", "[0-9]{2}-[a-z]+", r"^[0-9]{2}-[a-z]+$"),
    ("grammar", 'start: num ("+" num)*\nnum: /[0-9]/', r"^[0-9](\+[0-9])*$"),
    # tiny-random has no brackets or braces: JSON strings and numbers only
    ("json_schema", {"enum": ["tea", "oat", 12, -3.5]}, None),
])
def test_every_output_satisfies_the_constraint(lm80, kind, value, check):
    import json
    import re

    outs = dl.generate(lm80, [PROMPT] * 40, max_new_tokens=24, seed=3, temperature=1.0, **{kind: value})
    done = [o for o in outs if o.finish_reason == "stop"]
    assert len(done) >= 10 and all(o.constraint_satisfied for o in done)
    # a text cut by max_new_tokens may still be complete (regex [a-z]+ after some letters)
    for out in [o for o in outs if o.constraint_satisfied]:
        if check:
            assert re.match(check, out.text), out.text
        else:
            assert json.loads(out.text) in ["tea", "oat", 12, -3.5]


def test_eos_only_when_complete_and_stop_when_not_extendable(lm):
    g = compile_grammar(lm, regex="a+")
    m = g.matcher()
    assert not masks_to_bool(fill_masks([(m, 0, [])], 1, g), g)[0, 0]  # EOS not before any "a"
    m.consume_token(6)
    assert masks_to_bool(fill_masks([(m, 0, [])], 1, g), g)[0, 0]  # complete: EOS allowed
    # complete but extendable: the model chooses; texts are a+, some longer than one "a"
    outs = dl.generate(lm, [PROMPT] * 200, max_new_tokens=6, seed=1, temperature=1.0, regex="a+")
    assert {o.text for o in outs if o.finish_reason == "stop"} <= {"a" * n for n in range(1, 7)}
    assert any(o.token_ids and o.token_ids[-1] == 0 for o in outs)
    # not extendable: the row ends at once, without an EOS token
    out = dl.generate(lm, PROMPT, max_new_tokens=6, seed=1, temperature=1.0, regex="ea|to")
    assert out.finish_reason == "stop" and out.text in ("ea", "to") and 0 not in out.token_ids


def test_tokens_beyond_the_tokenizer_are_never_allowed(lm):
    g = dataclasses.replace(compile_grammar(lm, regex="[a-z]*"), real_vocab=12)
    mask = masks_to_bool(fill_masks([(g.matcher(), 0, [])], 1, g), g)
    assert mask.shape == (1, 16) and not mask[0, 12:].any() and mask[0, 4:12].any()


def test_masks_along_a_token_tree_follow_root_paths(lm):
    """Node j's row equals the mask after consuming the root path to node j."""
    g = compile_grammar(lm, regex="(ea|et)[ns]?")
    c = GrammarConstraint(g)

    class State:
        active = [0, 1]

        def __init__(self):
            self.lm = lm

    state = State()
    c.start(state)
    tokens = torch.tensor([[4, 6, 5, 9], [5, 6, 4, 5]])  # e a t n ; t a e t
    parents = torch.tensor([[-1, 0, 0, 1], [-1, -1, -1, 2]])
    mask = c.allowed(state, tokens, parents)
    assert mask.shape == (2 * 5, 16)
    for b in range(2):
        for j in range(4):
            path, node = [], j
            while node >= 0:
                path.append(int(tokens[b, node]))
                node = int(parents[b, node])
            m = g.matcher()
            if m.try_consume_tokens(path[::-1]) == len(path):
                want = masks_to_bool(fill_masks([(m, 0, [])], 1, g), g)[0]
                assert torch.equal(mask[b * 5 + j + 1], want), (b, j)
    # the matchers were rolled back: the root rows are the start masks
    start = masks_to_bool(fill_masks([(g.matcher(), 0, [])], 1, g), g)[0]
    assert torch.equal(mask[0], start) and torch.equal(mask[5], start)
    assert torch.equal(c.allowed(state, None, None)[0], start)


def test_forbidden_drafts_are_rejected(lm):
    """Prompt lookup proposes the prompt's continuation (letters the grammar forbids): outputs
    still satisfy the grammar, and the forbidden drafts were rejected."""
    prompt = [1, 8, 9, 8, 9, 8]  # i n i n i -> lookup proposes "n i n"
    outs = dl.generate(lm, [prompt] * 50, max_new_tokens=8, seed=2, temperature=1.0, regex="[eta]{3}",
                       speculative=PromptLookup(k=3, max_ngram=1))
    assert all(o.constraint_satisfied and len(o.text) == 3 and set(o.text) <= set("eta") for o in outs)
    assert sum(o.stats.proposed for o in outs) > 0
