"""A small problem set whose answers code can check (for AdaDec/CNTP accuracy against greedy).

Written here, not taken from a benchmark: 2-digit additions, 1-by-2-digit multiplications,
word reversal and letter counting, generated from a fixed seed. `check(problem, text)` reads the
first number (or word) of the answer.

Example:
    >>> ps = problems(8)
    >>> check(ps[0], str(ps[0]["answer"]))
    True
"""

from __future__ import annotations

import random
import re
from typing import Any

WORDS = ["garden", "planet", "silver", "window", "rocket", "butter", "candle", "forest", "pencil", "marble",
         "castle", "dragon", "orange", "pirate", "summer", "turtle"]


def problems(count: int = 24, seed: int = 0) -> list[dict[str, Any]]:
    """`count` problems, cycling through the four kinds: {"id", "kind", "messages", "answer"}."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        kind = ("add", "multiply", "reverse", "count")[i % 4]
        if kind == "add":
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            question, answer = f"What is {a} + {b}? Answer with the number only.", a + b
        elif kind == "multiply":
            a, b = rng.randint(2, 9), rng.randint(11, 29)
            question, answer = f"What is {a} * {b}? Answer with the number only.", a * b
        elif kind == "reverse":
            word = rng.choice(WORDS)
            question, answer = f"Write the word '{word}' backwards. Answer with that one word only.", word[::-1]
        else:
            word = rng.choice(WORDS)
            question, answer = f"How many letters does the word '{word}' have? Answer with the number only.", len(word)
        out.append({"id": f"{kind}-{i}", "kind": kind, "messages": [{"role": "user", "content": question}],
                    "answer": answer})
    return out


def check(problem: dict[str, Any], text: str) -> bool:
    """Whether the answer's first number (or first word, for reversal) is the right one."""
    if isinstance(problem["answer"], int):
        found = re.search(r"-?\d+", text)
        return found is not None and int(found.group()) == problem["answer"]
    found = re.search(r"[A-Za-z]+", text)
    return found is not None and found.group().lower() == problem["answer"]
