"""Packaged prompt suites: JSON-lines files of chat prompts in categories.

Neutral data that any layer may read: `decodelab bench` runs the suites, and a method that needs a
text corpus (VocabTrim's token frequencies) takes `suite_texts()`.

A suite row is `{"id", "category", "source", "messages"}` (see `suites/SOURCES.md`). The
packaged suites are `specbench_mini` (72 prompts, 6 Spec-Bench-style categories) and `quick`
(one prompt per category, for smoke runs); any other `.jsonl` path with the same rows works.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidOption

SUITES_DIR = Path(__file__).resolve().parent / "suites"


class SuiteError(InvalidOption):
    """A prompt suite that is missing, unreadable or malformed."""


@dataclass(frozen=True)
class BenchPrompt:
    """One prompt of a suite: an OpenAI-style message list with its id and category."""

    id: str
    category: str
    messages: list[dict[str, str]]
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "category": self.category, "source": self.source, "messages": self.messages}


@dataclass
class Suite:
    """A named, ordered list of prompts.

    Example:
        >>> from decodelab.corpus import load_suite
        >>> suite = load_suite("quick")
        >>> len(suite), sorted(suite.categories)[:2]
        (6, ['math', 'multi_turn'])
    """

    name: str
    prompts: list[BenchPrompt]
    path: str = ""
    per_category: int | None = None
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompts)

    def __iter__(self):
        return iter(self.prompts)

    @property
    def categories(self) -> list[str]:
        """Categories in order of first appearance."""
        return list(dict.fromkeys(p.category for p in self.prompts))

    def counts(self) -> dict[str, int]:
        """Number of prompts per category."""
        return dict(Counter(p.category for p in self.prompts))


def available_suites() -> list[str]:
    """Names of the packaged suites."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.jsonl"))


def load_suite(name_or_path: str | Path, *, per_category: int | None = None, limit: int | None = None) -> Suite:
    """Load a packaged suite by name or a `.jsonl` file by path.

    `per_category` keeps the first N prompts of each category (file order is kept);
    `limit` then keeps the first N prompts overall.

    Example:
        >>> suite = load_suite("specbench_mini", per_category=2)
        >>> suite.counts()["math"]
        2
    """
    if per_category is not None and (isinstance(per_category, bool) or not isinstance(per_category, int)
                                     or per_category < 1):
        raise InvalidOption(f"per_category must be an integer >= 1, got {per_category!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidOption(f"limit must be an integer >= 1, got {limit!r}")
    path = _resolve(name_or_path)
    prompts = _read(path)
    if per_category is not None:
        taken: Counter[str] = Counter()
        kept = []
        for prompt in prompts:
            if taken[prompt.category] < per_category:
                taken[prompt.category] += 1
                kept.append(prompt)
        prompts = kept
    if limit is not None:
        prompts = prompts[:limit]
    name = path.stem if path.parent == SUITES_DIR else str(path)
    return Suite(name=name, prompts=prompts, path=str(path), per_category=per_category)


def _resolve(name_or_path: str | Path) -> Path:
    text = str(name_or_path).strip()
    if not text:
        raise SuiteError("a suite name or path is required")
    packaged = SUITES_DIR / f"{text}.jsonl"
    if "/" not in text and not text.endswith(".jsonl") and packaged.is_file():
        return packaged
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise SuiteError(f"suite '{text}' is not a file")
    raise SuiteError(
        f"unknown suite '{text}': not a packaged suite ({', '.join(available_suites())}) or an existing .jsonl file"
    )


def _read(path: Path) -> list[BenchPrompt]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"cannot read suite {path}: {exc}") from exc
    prompts: list[BenchPrompt] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SuiteError(f"{where}: not valid JSON ({exc.msg})") from None
        prompt = _row(row, where)
        if prompt.id in seen:
            raise SuiteError(f"{where}: duplicate id '{prompt.id}'")
        seen.add(prompt.id)
        prompts.append(prompt)
    if not prompts:
        raise SuiteError(f"suite {path} holds no prompts")
    return prompts


def _row(row: Any, where: str) -> BenchPrompt:
    if not isinstance(row, dict):
        raise SuiteError(f"{where}: each line must be a JSON object")
    for key in ("id", "category"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise SuiteError(f"{where}: '{key}' must be a non-empty string")
    source = row.get("source", "")
    if not isinstance(source, str):
        raise SuiteError(f"{where}: 'source' must be a string")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise SuiteError(f"{where}: 'messages' must be a non-empty list of chat messages")
    for message in messages:
        if (not isinstance(message, dict) or not isinstance(message.get("role"), str)
                or not isinstance(message.get("content"), str)):
            raise SuiteError(f"{where}: each message needs string 'role' and 'content'")
    if not any(m["content"].strip() for m in messages):
        raise SuiteError(f"{where}: the messages are empty")
    clean = [{"role": m["role"], "content": m["content"]} for m in messages]
    return BenchPrompt(id=row["id"], category=row["category"], messages=clean, source=source)


def suite_texts(name_or_path: str | Path = "specbench_mini") -> list[str]:
    """Every message text of a suite, e.g. as a corpus for token frequencies (VocabTrim).

    Example:
        >>> len(suite_texts("quick")) >= 6
        True
    """
    return [m["content"] for prompt in load_suite(name_or_path) for m in prompt.messages]
