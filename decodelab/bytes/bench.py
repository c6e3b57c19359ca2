"""Measurements for the byte-level family: an infilling set and its FIM table, ByteLM speed.

The infilling set is made from the Python standard library installed with the interpreter
running decodelab (functions of a few modules, read with `ast`), each split at two random
character positions into prefix / middle / suffix, with a fixed seed. A prediction counts as an
exact match when its first len(middle) characters are the middle (instruct models rarely emit an
end token after the middle, so the generation is cut at the middle's length).

Example:
    >>> cases = infilling_set(4, seed=0)
    >>> sorted(cases[0])
    ['middle', 'name', 'prefix', 'suffix']
"""

from __future__ import annotations

import ast
import inspect
import json
import random
import time
from pathlib import Path
from typing import Any

from ..errors import InvalidOption
from ..models.lm import LM

MODULES = ("textwrap", "shlex", "string", "fnmatch", "glob", "posixpath", "colorsys", "bisect", "heapq",
           "calendar", "base64", "quopri", "netrc", "filecmp", "tabnanny", "keyword", "numbers", "getopt")
MAX_CHARS = 700  # functions longer than this are skipped (prefill time on a CPU)


def stdlib_functions(max_chars: int = MAX_CHARS) -> list[tuple[str, str]]:
    """(qualified name, source) of the top-level functions of MODULES, at most `max_chars` long."""
    import importlib

    out = []
    for name in MODULES:
        try:
            source = inspect.getsource(importlib.import_module(name))
        except (ImportError, OSError, TypeError):
            continue
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef):
                text = ast.get_source_segment(source, node) or ""
                if 80 <= len(text) <= max_chars:
                    out.append((f"{name}.{node.name}", text))
    return out


def infilling_set(n: int, *, seed: int = 0, min_middle: int = 4, max_middle: int = 40) -> list[dict[str, str]]:
    """`n` FIM cases: stdlib functions split at two random character positions."""
    if not 1 <= n <= 10_000:
        raise InvalidOption(f"n must be in 1..10000, got {n}")
    rng = random.Random(seed)
    functions = stdlib_functions()
    rng.shuffle(functions)
    cases = []
    for name, text in functions[:n]:
        start = rng.randrange(10, len(text) - max_middle - 1)
        end = start + rng.randint(min_middle, max_middle)
        cases.append({"name": name, "prefix": text[:start], "middle": text[start:end], "suffix": text[end:]})
    return cases


def fim_table(lm: LM, cases: list[dict[str, str]], *, out: Path | None = None, extra_tokens: int = 4,
              progress: bool = True) -> dict[str, Any]:
    """Run token-level and byte-level FIM (greedy) on every case; exact-match rates and timings.
    Rows are appended to `out` (JSONL) as they finish, so a long run can be read while it goes."""
    from rich.progress import track

    from .fim import fim

    rows = []
    for case in track(cases, description="FIM", disable=not progress):
        row: dict[str, Any] = {"name": case["name"], "middle": case["middle"]}
        budget = len(lm.tokenizer(case["middle"], add_special_tokens=False)["input_ids"]) + extra_tokens
        for mode, byte_level in (("token", False), ("byte", True)):
            t0 = time.perf_counter()
            result = fim(lm, case["prefix"], case["suffix"], byte_level=byte_level, max_new_tokens=budget)
            row[f"{mode}_seconds"] = time.perf_counter() - t0
            row[f"{mode}_text"] = result.text
            row[f"{mode}_exact"] = result.text[: len(case["middle"])] == case["middle"]
        rows.append(row)
        if out is not None:
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")
    return summarize(rows)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    summary: dict[str, Any] = {"cases": n}
    for mode in ("token", "byte"):
        summary[f"{mode}_exact_match"] = sum(r[f"{mode}_exact"] for r in rows) / n if n else 0.0
        summary[f"{mode}_seconds"] = sum(r[f"{mode}_seconds"] for r in rows)
    summary["byte_only"] = sum(r["byte_exact"] and not r["token_exact"] for r in rows)
    summary["token_only"] = sum(r["token_exact"] and not r["byte_exact"] for r in rows)
    return summary


def bytelm_speed(lm: LM, texts: list[str]) -> dict[str, float]:
    """ByteLM scoring vs token-level scoring of the same texts, side by side in one run:
    bytes/s, model calls and tokens forwarded per byte, and the time ratio."""
    import torch

    from ..engine.sequence import Sequence
    from .bytelm import ByteLM

    total_bytes = byte_time = token_time = 0.0
    calls = forwarded = tokens = 0
    for text in texts:
        data = text.encode()
        bl = ByteLM(lm)
        t0 = time.perf_counter()
        bl.logprob(data)
        byte_time += time.perf_counter() - t0
        calls += bl.model_calls
        forwarded += bl.tokens_forwarded
        ids = bl.context + list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
        t0 = time.perf_counter()
        seq = Sequence(lm, [ids[:1]])
        seq.prefill()
        for t in ids[1:]:  # token-level scoring one token per call, as decoding would
            seq.forward(torch.tensor([[t]]))
        token_time += time.perf_counter() - t0
        tokens += len(ids) - 1
        total_bytes += len(data)
    return {"bytes": total_bytes, "bytes_per_second": total_bytes / byte_time,
            "model_calls_per_byte": calls / total_bytes, "tokens_forwarded_per_byte": forwarded / total_bytes,
            "token_level_tokens_per_second": tokens / token_time, "bytes_per_token": total_bytes / tokens,
            "time_ratio_byte_vs_token": byte_time / token_time}
