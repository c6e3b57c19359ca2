"""Constrained generation on the packaged SmolLM2 (slow): every mode's output satisfies its
constraint (regex, a JSON schema with nested objects, enums, arrays and numbers, a CFG),
speculative decoding with masks, and token healing at a mid-word prompt boundary."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

import decodelab as dl

pytestmark = pytest.mark.slow

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 12},
    "kind": {"enum": ["cat", "dog"]},
    "scores": {"type": "array", "items": {"type": "number"}, "maxItems": 2},
    "home": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}}, "required": ["city"],
             "additionalProperties": False}},
    "required": ["name", "kind", "scores", "home"], "additionalProperties": False,
    "x-guidance": {"whitespace_flexible": False}}
LARK = 'start: "The answer is " ANSWER "."\nANSWER: "yes" | "no" | /[0-9]{1,3}/'


@pytest.mark.parametrize("method", ["mask", "awrs", "smc"])
def test_json_schema_every_mode(smol, method):
    extra = {"particles": 2} if method == "smc" else {}
    out = dl.generate(smol, "Describe a pet as JSON.", json_schema=SCHEMA, temperature=0.8, seed=1, max_new_tokens=60,
                      constraint_method=method, **extra)
    assert out.finish_reason == "stop" and out.constraint_satisfied, out.text
    jsonschema.validate(json.loads(out.text), SCHEMA)


@pytest.mark.parametrize("method", ["mask", "awrs"])
def test_regex_and_cfg(smol, method):
    out = dl.generate(smol, "What is your phone number?", regex=r"\+?[0-9]{3}-[0-9]{4}", temperature=0.8, seed=2,
                      max_new_tokens=12, constraint_method=method)
    assert out.constraint_satisfied and re.fullmatch(r"\+?[0-9]{3}-[0-9]{4}", out.text), out.text
    out = dl.generate(smol, "Is water wet?", grammar=LARK, temperature=0.8, seed=2, max_new_tokens=12,
                      constraint_method=method)
    assert out.constraint_satisfied and re.fullmatch(r"The answer is (yes|no|[0-9]{1,3})\.", out.text), out.text


def test_masks_with_prompt_lookup(smol):
    prompt = "Repeat exactly: 2024-11-28 2024-11-28 2024-11-28"
    plain = dl.generate(smol, prompt, regex=r"[0-9]{4}-[0-9]{2}-[0-9]{2}", temperature=0, max_new_tokens=12)
    spec = dl.generate(smol, prompt, regex=r"[0-9]{4}-[0-9]{2}-[0-9]{2}", temperature=0, max_new_tokens=12,
                       speculative=dl.spec.PromptLookup(k=4))
    assert spec.token_ids == plain.token_ids and spec.constraint_satisfied


def test_token_healing_at_a_mid_word_boundary(smol):
    prompt = "The capital of France is Par"
    healed = dl.generate(smol, prompt, chat=False, regex="is", token_healing=True, temperature=0, max_new_tokens=4)
    assert healed.constraint_satisfied and healed.text == "is"
    # the boundary token " Par" was backed up: the model wrote " Paris"-like tokens itself
    assert smol.decode(healed.token_ids).endswith("Paris")
    assert healed.prompt_token_ids == smol.encode(prompt, chat=False)[:-1]
