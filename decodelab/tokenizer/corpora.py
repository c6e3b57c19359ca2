"""Offline text categories for tokenizer analyses, read from files every install of decodelab has.

Hayase et al. (2024), "Data Mixture Inference: What do BPE Tokenizers Reveal about their Training
Data?", need a sample of text from each category whose share they estimate. No data hub is reachable
here, so the built-in categories come from the Python standard library and from the project's own
pinned dependencies (nothing is downloaded):

- `english`: the prose of the Python documentation topics (`pydoc_data.topics`, standard library);
- `python`: Python source of the standard library;
- `c`: the C headers shipped with numpy (`numpy.get_include()`);
- `afm`: Adobe font-metric tables shipped with matplotlib (structured key/value data).

Each category is cut into pieces of about `PIECE_CHARS` characters at blank lines; alternate pieces
go to two disjoint halves, so a tokenizer can be trained on one half and analysed with the other.

Example:
    >>> cats = builtin_categories(max_chars=20_000)
    >>> sorted(cats), all(len(c.train) > 0 and len(c.heldout) > 0 for c in cats.values())
    (['afm', 'c', 'english', 'python'], True)
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidOption
from ..text import read_text_file

PIECE_CHARS = 2000
MAX_CATEGORY_CHARS = 20_000_000  # one category's text, at most
BUILTIN = ("english", "python", "c", "afm")


@dataclass(frozen=True)
class Category:
    """A named text category cut into pieces, with two disjoint halves (`train`, `heldout`)."""

    name: str
    source: str
    train: tuple[str, ...]
    heldout: tuple[str, ...]

    def chars(self, half: str = "heldout") -> int:
        return sum(len(p) for p in getattr(self, half))


def pieces(text: str, size: int = PIECE_CHARS) -> list[str]:
    """`text` cut at blank lines into pieces of about `size` characters (a longer block stays whole)."""
    out, current, length = [], [], 0
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        current.append(block)
        length += len(block) + 2
        if length >= size:
            out.append("\n\n".join(current) + "\n\n")
            current, length = [], 0
    if current:
        out.append("\n\n".join(current) + "\n\n")
    return out


def category(name: str, texts: list[str], source: str, max_chars: int = MAX_CATEGORY_CHARS) -> Category:
    """A Category from raw texts: cut into pieces, at most `max_chars` in all, alternate pieces to
    each half. Empty text is an InvalidOption."""
    if not 1 <= max_chars <= MAX_CATEGORY_CHARS:
        raise InvalidOption(f"max_chars must be in [1, {MAX_CATEGORY_CHARS}], got {max_chars}", param="max_chars")
    cut, total = [], 0
    for text in texts:
        for piece in pieces(text):
            if total >= max_chars:
                break
            cut.append(piece)
            total += len(piece)
    if len(cut) < 2:
        raise InvalidOption(f"category {name!r} has too little text ({total} characters in {len(cut)} piece(s); "
                            f"at least two pieces of about {PIECE_CHARS} characters are needed)", param="categories")
    return Category(name, source, tuple(cut[0::2]), tuple(cut[1::2]))


def _english() -> tuple[list[str], str]:
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)], "pydoc_data.topics (Python documentation prose)"


def _python() -> tuple[list[str], str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "site-packages", "pydoc_data", "idlelib", "lib2to3", "tkinter", "turtledemo", "ensurepip"}
    files = [p for p in sorted(root.rglob("*.py")) if not skip & set(p.relative_to(root).parts)]
    return [p.read_text(encoding="utf-8", errors="replace") for p in files], f"{root}/**.py (standard library)"


def _c() -> tuple[list[str], str]:
    import numpy

    root = Path(numpy.get_include())
    files = sorted(root.rglob("*.h"))
    return [p.read_text(encoding="utf-8", errors="replace") for p in files], f"{root}/**.h (numpy C headers)"


def _afm() -> tuple[list[str], str]:
    import matplotlib

    root = Path(matplotlib.get_data_path()) / "fonts" / "afm"
    files = sorted(root.glob("*.afm"))
    return [p.read_text(encoding="latin-1") for p in files], f"{root}/*.afm (matplotlib font metrics)"


_READERS = {"english": _english, "python": _python, "c": _c, "afm": _afm}


def builtin_categories(names: tuple[str, ...] | list[str] = BUILTIN, max_chars: int = 1_000_000) -> dict[str, Category]:
    """The built-in categories named (all four by default), each at most `max_chars` characters."""
    unknown = [n for n in names if n not in _READERS]
    if unknown:
        raise InvalidOption(f"unknown built-in categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; "
                            f"known: {', '.join(BUILTIN)}", param="categories")
    out = {}
    for name in names:
        texts, source = _READERS[name]()
        out[name] = category(name, texts, source, max_chars)
    return out


def file_category(name: str, path: str, max_chars: int = MAX_CATEGORY_CHARS) -> Category:
    """A category from one UTF-8 text file (binary, missing or empty files are InvalidOption)."""
    text = read_text_file(path, f"category {name}", max_chars=MAX_CATEGORY_CHARS)
    if not text.strip():
        raise InvalidOption(f"category {name}: {path} is empty", param="categories")
    return category(name, [text], path, max_chars)





def word_frequencies(min_length: int = 2, max_length: int = 30) -> dict[str, int]:
    """Lower-case alphabetic words of the `english` category (Python documentation prose) with their
    counts there: the offline word list of the character-level suite, counts as a frequency proxy."""
    import re
    from collections import Counter

    texts, _ = _english()
    counts = Counter(w for t in texts for w in re.findall(r"\b[a-z]+\b", t))
    return {w: c for w, c in sorted(counts.items()) if min_length <= len(w) <= max_length}

__all__ = ["Category", "builtin_categories", "file_category", "category", "pieces", "word_frequencies", "BUILTIN"]
