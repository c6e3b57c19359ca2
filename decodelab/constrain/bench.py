"""Bench of constrained generation: `python -m decodelab.constrain.bench [--out DIR] [--quick]`.

Measures, in one process:
1. per-token constraint overhead (µs) on SmolLM2: llguidance mask + bool conversion replayed
   along generated JSON (median / p99), and the constraint time per token of whole mask and
   AWRS generations (AWRS: Gumbel keys, top-k walks and one check per candidate);
2. AWRS constraint checks per token against vocabulary size (tiny-random 16..80, SmolLM2 49152);
3. JSON-schema validity of unconstrained vs constrained generation on a set of schemas.
Writes results.json and results.md to the output folder; reports the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from pathlib import Path
from typing import Any

SCHEMAS: list[tuple[str, dict[str, Any]]] = [
    ("person", {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                                 "age": {"type": "integer", "minimum": 0, "maximum": 120}},
                "required": ["name", "age"], "additionalProperties": False}),
    ("enum", {"type": "object", "properties": {"sentiment": {"enum": ["positive", "negative", "neutral"]}},
              "required": ["sentiment"], "additionalProperties": False}),
    ("array", {"type": "object", "properties": {"colors": {"type": "array", "items": {"type": "string", "maxLength": 12},
                                                           "minItems": 2, "maxItems": 3}},
               "required": ["colors"], "additionalProperties": False}),
    ("nested", {"type": "object", "properties": {
        "city": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                                  "population": {"type": "number"}},
                 "required": ["name", "population"], "additionalProperties": False}},
        "required": ["city"], "additionalProperties": False}),
    ("numbers", {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"},
                                                  "ok": {"type": "boolean"}},
                 "required": ["x", "y", "ok"], "additionalProperties": False}),
]
PROMPTS = {
    "person": "Describe a fictional person as JSON with keys name and age.",
    "enum": "Classify the sentiment of 'I love this phone' as JSON with key sentiment.",
    "array": "List two or three colours as JSON with key colors.",
    "nested": "Describe Paris as JSON: {\"city\": {\"name\": ..., \"population\": ...}}.",
    "numbers": "Give a point as JSON with numeric keys x, y and a boolean ok.",
}


def json_valid(text: str, schema: dict[str, Any]) -> tuple[bool, bool]:
    """(strict: the whole text is valid JSON under the schema, lenient: after stripping
    markdown fences and surrounding prose to the outermost braces)."""
    import jsonschema

    def ok(candidate: str) -> bool:
        try:
            jsonschema.validate(json.loads(candidate), schema)
            return True
        except Exception:  # noqa: BLE001 - any parse or validation error means invalid
            return False

    strict = ok(text)
    match = re.search(r"\{.*\}", text, re.S)
    return strict, strict or (match is not None and ok(match.group(0)))


def overhead(lm: Any, quick: bool) -> dict[str, Any]:
    import decodelab as dl
    from decodelab.constrain.grammar import compile_grammar, fill_masks, masks_to_bool

    name, schema = SCHEMAS[3]
    grammar = compile_grammar(lm, json_schema=schema)
    out = dl.generate(lm, PROMPTS[name], json_schema=schema, temperature=0.7, seed=0, max_new_tokens=48)
    fill, convert = [], []
    for _ in range(3 if quick else 10):
        m = grammar.matcher()
        for token in out.token_ids:
            t0 = time.perf_counter()
            bitmask = fill_masks([(m, 0, [])], 1, grammar)
            t1 = time.perf_counter()
            masks_to_bool(bitmask, grammar)
            t2 = time.perf_counter()
            fill.append((t1 - t0) * 1e6)
            convert.append((t2 - t1) * 1e6)
            if token not in lm.eos_token_ids:
                m.consume_token(token)
    runs = {}
    for method in ("mask", "awrs"):
        o = dl.generate(lm, PROMPTS[name], json_schema=schema, temperature=0.7, seed=1, max_new_tokens=48,
                        constraint_method=method)
        s = o.stats
        runs[method] = {"tokens": s.new_tokens, "constraint_us_per_token": 1e6 * s.constraint_time / max(1, s.new_tokens),
                        "decode_ms_per_token": 1e3 * (s.wall_time - s.prefill_time) / max(1, s.new_tokens),
                        "checks_per_token": s.constraint_checks / max(1, s.new_tokens), "valid": json_valid(o.text, schema)[0]}
    q = statistics.quantiles
    return {"schema": name, "positions": len(fill),
            "mask_fill_us": {"median": statistics.median(fill), "p99": q(fill, n=100)[98]},
            "mask_to_bool_us": {"median": statistics.median(convert), "p99": q(convert, n=100)[98]},
            "generation": runs}


def checks_vs_vocab(smol: Any, quick: bool) -> list[dict[str, Any]]:
    import decodelab as dl

    rows = []
    for vocab in (16, 32, 64, 80):
        lm = dl.load("tiny-random", vocab_size=vocab, init_std=0.3, seed=1)
        outs = dl.generate(lm, [[1, 4, 5, 6, 7]] * (50 if quick else 200), regex="[eta]{4}", temperature=1.0, seed=0,
                           max_new_tokens=4, constraint_method="awrs", records=False)
        tokens = sum(o.stats.new_tokens for o in outs)
        rows.append({"model": f"tiny-random vocab {vocab}", "vocab": vocab, "constraint": "regex [eta]{4}",
                     "checks_per_token": sum(o.stats.constraint_checks for o in outs) / tokens,
                     "allowed_fraction": 3 / vocab})
    for name, schema in SCHEMAS[:2 if quick else 3]:
        o = dl.generate(smol, PROMPTS[name], json_schema=schema, temperature=0.7, seed=2, max_new_tokens=40,
                        constraint_method="awrs")
        rows.append({"model": "SmolLM2-135M", "vocab": smol.vocab_size, "constraint": f"JSON schema {name}",
                     "checks_per_token": o.stats.constraint_checks / max(1, o.stats.new_tokens)})
    return rows


def validity(lm: Any, quick: bool, max_new_tokens: int) -> list[dict[str, Any]]:
    import decodelab as dl

    rows = []
    for name, schema in SCHEMAS[:2] if quick else SCHEMAS:
        row: dict[str, Any] = {"schema": name}
        for label, options in (("unconstrained", {}), ("mask", {"json_schema": schema}),
                               ("awrs", {"json_schema": schema, "constraint_method": "awrs"})):
            o = dl.generate(lm, PROMPTS[name], temperature=0.7, seed=3, max_new_tokens=max_new_tokens, **options)
            strict, lenient = json_valid(o.text, schema)
            row[label] = {"strict": strict, "lenient": lenient, "finish": o.finish_reason, "text": o.text[:160]}
        rows.append(row)
    return rows


def markdown(result: dict[str, Any]) -> str:
    o = result["overhead"]
    lines = [f"Load average at start / end: {result['load_start']} / {result['load_end']} (2 cores).", "",
             f"Mask per step along a generated JSON ({o['positions']} positions, schema `{o['schema']}`):",
             "", "| step | median µs | p99 µs |", "|---|---|---|",
             f"| llguidance fill (bitmask) | {o['mask_fill_us']['median']:.1f} | {o['mask_fill_us']['p99']:.1f} |",
             f"| bitmask -> bool [V] tensor | {o['mask_to_bool_us']['median']:.1f} | {o['mask_to_bool_us']['p99']:.1f} |",
             "", "| generation | tokens | constraint µs/token | decode ms/token | checks/token | valid |",
             "|---|---|---|---|---|---|"]
    for method, r in o["generation"].items():
        lines.append(f"| {method} | {r['tokens']} | {r['constraint_us_per_token']:.0f} | {r['decode_ms_per_token']:.1f} | "
                     f"{r['checks_per_token']:.1f} | {r['valid']} |")
    lines += ["", "| model | vocabulary | constraint | AWRS checks per token |", "|---|---|---|---|"]
    for r in result["checks"]:
        lines.append(f"| {r['model']} | {r['vocab']} | {r['constraint']} | {r['checks_per_token']:.2f} |")
    lines += ["", "| schema | unconstrained strict / lenient | mask | awrs |", "|---|---|---|---|"]
    def cell(r: dict[str, Any], k: str) -> str:
        return f"{'yes' if r[k]['strict'] else 'no'} / {'yes' if r[k]['lenient'] else 'no'}"

    for r in result["validity"]:
        lines.append(f"| {r['schema']} | {cell(r, 'unconstrained')} | {cell(r, 'mask')} | {cell(r, 'awrs')} |")
    n = len(result["validity"])
    rate = {k: sum(r[k]["strict"] for r in result["validity"]) / n for k in ("unconstrained", "mask", "awrs")}
    lines += ["", "Strict validity rate: " + ", ".join(f"{k} {v:.0%}" for k, v in rate.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import decodelab as dl

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/bench/constrain")
    parser.add_argument("--quick", action="store_true", help="fewer schemas and repetitions")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    load_start = os.getloadavg()
    smol = dl.load()
    result = {"load_start": [round(x, 2) for x in load_start], "model": smol.name}
    result["overhead"] = overhead(smol, args.quick)
    result["checks"] = checks_vs_vocab(smol, args.quick)
    result["validity"] = validity(smol, args.quick, args.max_new_tokens)
    result["load_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    (out / "results.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
