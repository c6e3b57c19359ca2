"""Inputs shared by the greedy-equality tests of chains and trees."""

from __future__ import annotations

from decodelab.models.registry import find_pack

# repetitive, short and one-character prompts: drafts get accepted, rejected, and hit the start
PROMPTS = [
    "the cat sat on the mat. the cat sat on the",
    "abc abc abc abc abc",
    "hello world, hello",
    "x",
]

qwen_installed = all(find_pack(n).installed() for n in ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"))
