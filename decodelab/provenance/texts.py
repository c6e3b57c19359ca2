"""Input texts of the provenance tests: JSON lines `{"text": ...}`, checked once at the boundary.

Example:
    >>> check_texts(["a text", "another"], "candidates")
    ['a text', 'another']
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..errors import InvalidOption
from ..text import check_text, read_text_file

MAX_TEXTS = 100_000  # texts per set (candidates, reference, ...)
MAX_TEXT_CHARS = 1_000_000


def check_texts(texts: Any, what: str, *, min_count: int = 1) -> list[str]:
    """`texts` as a list of non-empty, valid Unicode strings; a typed error naming `what` otherwise."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InvalidOption(f"{what} must be a list of texts", param=what)
    if len(texts) < min_count:
        raise InvalidOption(f"{what} is empty" if not texts else
                            f"{what} has {len(texts)} texts; at least {min_count} are needed", param=what,
                            code="too_few")
    if len(texts) > MAX_TEXTS:
        raise InvalidOption(f"{what} has {len(texts)} texts; at most {MAX_TEXTS}", param=what, code="too_large")
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidOption(f"{what}[{i}] is not a string", param=what)
        if not t.strip():
            raise InvalidOption(f"{what}[{i}] is empty", param=what)
        if len(t) > MAX_TEXT_CHARS:
            raise InvalidOption(f"{what}[{i}] is longer than {MAX_TEXT_CHARS} characters", param=what)
        out.append(check_text(t, f"{what}[{i}]", InvalidOption, param=what))
    return out


def read_json_lines(path: str, what: str, *, field: str | None = None) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file (blank lines skipped), each with a string `field` when
    one is named; a missing, binary or malformed file is a typed error naming the file and the line."""
    rows = []
    for number, line in enumerate(read_text_file(path, what).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidOption(f"{what}: {path} line {number} is not JSON ({exc.msg})", param=what) from None
        if not isinstance(row, dict) or (field is not None and not isinstance(row.get(field), str)):
            raise InvalidOption(f'{what}: {path} line {number} is not an object with a "{field}" string'
                                if field else f"{what}: {path} line {number} is not a JSON object", param=what)
        rows.append(row)
    return rows


def check_model(lm: Any) -> None:
    """A typed error unless `lm` is a model from `decodelab.load()`."""
    from ..models.lm import LM

    if not isinstance(lm, LM):
        raise InvalidOption("the first argument must be a model from decodelab.load()")


def read_texts(path: str, what: str, *, min_count: int = 1) -> list[str]:
    """The texts of a JSON-lines file, one `{"text": ...}` per line (blank lines skipped)."""
    texts = [row["text"] for row in read_json_lines(path, what, field="text")]
    if not texts:
        raise InvalidOption(f"{what}: {path} has no texts", param=what, code="too_few")
    return check_texts(texts, f"{what} ({path})", min_count=min_count)


__all__ = ["check_texts", "read_texts", "read_json_lines", "check_model", "MAX_TEXTS"]
