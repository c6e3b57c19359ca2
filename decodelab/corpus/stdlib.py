"""Offline English text with no download: paragraphs of the Python standard library's docstrings.

Provenance tests need many texts from one distribution, split at random into members (trained on)
and non-members, so that membership is known exactly. The standard library ships with every Python,
so this corpus is always there; its content depends on the Python version (the split, not the
content, is what the tests rely on).

Example:
    >>> from decodelab.corpus.stdlib import docstring_paragraphs
    >>> texts = docstring_paragraphs(20, min_chars=40, max_chars=120)
    >>> len(texts), all(40 <= len(t) <= 120 for t in texts)
    (20, True)
"""

from __future__ import annotations

import ast
import functools
import re
import sysconfig
from pathlib import Path

from ..errors import InvalidOption

MAX_PARAGRAPHS = 100_000


@functools.cache
def _all_paragraphs() -> tuple[str, ...]:
    """Every docstring paragraph of the standard library's top-level modules, whitespace folded,
    deduplicated, in a fixed order (module path, then position)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    out: list[str] = []
    for path in sorted(root.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node)
            if not doc:
                continue
            for block in re.split(r"\n\s*\n", doc):
                text = " ".join(block.split())
                if text and text not in seen and not text.startswith(">>>"):
                    seen.add(text)
                    out.append(text)
    return tuple(out)


def docstring_paragraphs(n: int | None = None, *, min_chars: int = 40, max_chars: int = 400,
                         alphabet: str | None = None) -> list[str]:
    """The first `n` (all when None) standard-library docstring paragraphs with `min_chars` to
    `max_chars` characters, optionally only those written entirely in `alphabet`.

    Shuffle them yourself (with a seed) before splitting into members and non-members."""
    if n is not None and not 0 <= n <= MAX_PARAGRAPHS:
        raise InvalidOption(f"n must be in [0, {MAX_PARAGRAPHS}], got {n}")
    allowed = set(alphabet) if alphabet is not None else None
    found = [t for t in _all_paragraphs() if min_chars <= len(t) <= max_chars
             and (allowed is None or set(t) <= allowed)]
    if n is not None and len(found) < n:
        raise InvalidOption(f"only {len(found)} standard-library paragraphs of {min_chars}-{max_chars} characters "
                            f"(asked for {n})")
    return found if n is None else found[:n]


__all__ = ["docstring_paragraphs"]
