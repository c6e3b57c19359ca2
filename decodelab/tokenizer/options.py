"""The options of the tokenizer analyses, defined once (type, range, default, help) for Python and the CLI.

Example:
    >>> from decodelab.sampling.options import check_options
    >>> check_options(DigitsOptions, {"num_problems": 20}, "tokenizer digits").num_problems
    20
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..sampling.options import option
from .bpe import MAX_MERGES
from .corpora import MAX_CATEGORY_CHARS
from .mixture_lp import MAX_TOP_PAIRS

MAX_PROBLEMS = 1000  # model generations per direction/task: bounds the run time
MAX_DIGITS = 30


@dataclass
class MixtureOptions:
    """`tokenizer mixture`: how much of the merge list and of each category sample to use."""

    num_merges: int = option(1000, "merges (from the start of the list) that give constraints", ge=1, le=MAX_MERGES)
    top_pairs: int = option(30, "rival pairs per category and merge step (the most frequent ones)", ge=1,
                            le=MAX_TOP_PAIRS)
    max_chars: int = option(1_000_000, "characters read from each category (half of them are the sample)",
                            ge=10_000, le=MAX_CATEGORY_CHARS)


@dataclass
class DigitsOptions:
    """`tokenizer digits`: generated arithmetic problems, asked with digits grouped in several ways."""

    num_problems: int = option(60, "problems (each is asked once per grouping)", ge=1, le=MAX_PROBLEMS)
    min_digits: int = option(3, "fewest digits of an operand", ge=1, le=MAX_DIGITS)
    max_digits: int = option(7, "most digits of an operand", ge=1, le=MAX_DIGITS)
    operation: Literal["add", "subtract"] = option("add", "the arithmetic operation")
    groupings: str = option("none,l2r,r2l", "comma-separated: none, l2r (groups of 3 from the left), r2l "
                            "(groups of 3 from the right, the usual thousands separator)", max_length=100)
    shots: int = option(3, "worked examples before each question (same grouping)", ge=0, le=8)
    seed: int = option(0, "problem generator seed", ge=0, le=2**63 - 1)
    batch_size: int = option(8, "prompts per generation batch", ge=1, le=64)


@dataclass
class CharbenchOptions:
    """`tokenizer charbench`: character-level questions about words from the offline word list."""

    num_words: int = option(40, "words (each gets every task)", ge=1, le=MAX_PROBLEMS)
    tasks: str = option("count,locate,spell", "comma-separated: count, locate, spell", max_length=100)
    min_length: int = option(4, "shortest word", ge=2, le=30)
    max_length: int = option(12, "longest word", ge=2, le=30)
    shots: int = option(3, "worked examples before each question", ge=0, le=8)
    seed: int = option(0, "word and letter sampling seed", ge=0, le=2**63 - 1)
    batch_size: int = option(8, "prompts per generation batch", ge=1, le=64)


__all__ = ["MixtureOptions", "DigitsOptions", "CharbenchOptions", "MAX_PROBLEMS"]
