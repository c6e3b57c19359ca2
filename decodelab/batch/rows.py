"""Rows of a JSONL dataset: their ids and the seed each row draws from.

A row is one JSON object per line. Its `id` is the row's own `"id"` field (text or integer) or,
without one, its line number (1-based). A row's seed is a hash of the job seed and the row id, so
what a row produces depends on neither the number of workers, nor the order rows run in, nor
retries.

Example:
    >>> rows = parse_rows(['{"id": "a", "prompt": "hi"}', '{"prompt": "yo"}', ''])
    >>> [(r.id, r.line) for r in rows]
    [('a', 1), (2, 2)]
    >>> row_seed(0, "a") == row_seed(0, "a") != row_seed(1, "a")
    True
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidOption

MAX_ID_CHARS = 512


@dataclass
class Row:
    """One input line: its id, its 1-based line number, the parsed object (None when the line
    is not a JSON object) and why it could not be parsed."""

    id: Any
    line: int
    data: dict[str, Any] | None = None
    problem: str | None = None

    @property
    def key(self) -> str:
        return id_key(self.id)

    def as_json(self) -> str:
        """The row as one JSON line (what is sent to a worker)."""
        return json.dumps({"id": self.id, "line": self.line, "data": self.data, "problem": self.problem},
                          ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Row:
        obj = json.loads(text)
        return cls(obj["id"], obj["line"], obj["data"], obj["problem"])


def id_key(value: Any) -> str:
    """The text an id is compared by (1 and "1" are the same row)."""
    return str(value)


def row_seed(job_seed: int, row_id: Any) -> int:
    """A 63-bit seed from the job seed and the row id (BLAKE2b of both)."""
    digest = hashlib.blake2b(f"{int(job_seed)}\x1f{id_key(row_id)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def parse_rows(lines: Iterable[str]) -> list[Row]:
    """Rows from JSONL lines (blank lines skipped). A line that is not a JSON object becomes a row
    with a `problem` (it gets an error record); two rows with the same id are an InvalidOption."""
    rows: list[Row] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        row = Row(number, number)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            row.problem = f"line {number} is not valid JSON: {exc.msg}"
        else:
            if not isinstance(data, dict):
                row.problem = f"line {number} is not a JSON object"
            else:
                row.data = data
                given = data.get("id")
                if given is not None:
                    if isinstance(given, bool) or not isinstance(given, (str, int)) or len(str(given)) > MAX_ID_CHARS:
                        row.problem = f"line {number}: id must be text or an integer (at most {MAX_ID_CHARS} characters)"
                    else:
                        row.id = given
        if row.key in seen:
            raise InvalidOption(f"id {row.id!r} appears on lines {seen[row.key]} and {number}: ids must be unique")
        seen[row.key] = number
        rows.append(row)
    return rows


def read_rows(path: str | Path) -> list[Row]:
    """The rows of a JSONL file; a missing or unreadable file is an InvalidOption."""
    try:
        with open(path, encoding="utf-8") as handle:
            return parse_rows(handle)
    except OSError as exc:
        raise InvalidOption(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidOption(f"{path} is not UTF-8 text") from None
