"""Digit-grouping transforms for arithmetic prompts, and an accuracy table per grouping.

Singh & Strouse (2024), "Tokenization counts: the impact of tokenization on arithmetic in frontier
LLMs". Models whose tokenizers cut numbers into chunks of up to three digits from the left (L2R, as
GPT-3.5/4's do) add worse than when the chunks are forced to run from the right (R2L) by writing
numbers with thousands separators; the error pattern follows the misaligned chunks.

Here a transform rewrites every run of digits in a text with a separator every three digits,
counted from the left (`l2r`: 1234567 -> 123,456,7) or from the right (`r2l`: 1,234,567), so that
any tokenizer sees the same grouping; `digits()` asks a model generated addition or subtraction
problems (known answers) under each grouping, with worked examples in the same grouping, and
reports exact-match accuracy. Exact: the transforms and the answers. What it measures depends on the
tokenizer: when a tokenizer already splits every digit (SmolLM2 and Qwen2.5 do), the separators
change the tokens around digits, not the digit chunks; `digit_tokens()` shows the segmentation.

Example:
    >>> group_digits("1234567 + 89", "l2r"), group_digits("1234567 + 89", "r2l")
    ('123,456,7 + 89', '1,234,567 + 89')
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidOption
from ..sampling.options import check_options
from .answers import answer_prompts, first_integer
from .options import DigitsOptions

GROUPINGS = ("none", "l2r", "r2l")
_SIGN = {"add": "+", "subtract": "-"}


def _group(run: str, direction: str, sep: str) -> str:
    if direction == "l2r":
        return sep.join(run[i:i + 3] for i in range(0, len(run), 3))
    head = len(run) % 3 or 3
    return sep.join([run[:head]] + [run[i:i + 3] for i in range(head, len(run), 3)])


def group_digits(text: str, direction: str, sep: str = ",") -> str:
    """`text` with a separator every three digits in each run of digits, groups counted from the
    left (`l2r`) or the right (`r2l`); `none` returns the text unchanged."""
    if direction not in GROUPINGS:
        raise InvalidOption(f"grouping must be one of {', '.join(GROUPINGS)}, got {direction!r}", param="groupings")
    if direction == "none":
        return text
    return re.sub(r"\d{4,}", lambda m: _group(m.group(0), direction, sep), text)


@dataclass(frozen=True)
class Problem:
    """`a op b = answer`."""

    a: int
    b: int
    operation: str

    @property
    def answer(self) -> int:
        return self.a + self.b if self.operation == "add" else self.a - self.b

    def question(self, grouping: str) -> str:
        return group_digits(f"Q: {self.a} {_SIGN[self.operation]} {self.b} = ?\nA:", grouping)

    def worked(self, grouping: str) -> str:
        return self.question(grouping) + " " + group_digits(str(self.answer), grouping) + "\n\n"


def problems(count: int, min_digits: int, max_digits: int, operation: str = "add", seed: int = 0) -> list[Problem]:
    """`count` problems whose operands have between min_digits and max_digits digits (seeded;
    subtraction keeps a >= b)."""
    if min_digits > max_digits:
        raise InvalidOption(f"min_digits ({min_digits}) is larger than max_digits ({max_digits})", param="min_digits")
    rng = random.Random(seed)

    def number() -> int:
        n = rng.randint(min_digits, max_digits)
        return rng.randint(10 ** (n - 1) if n > 1 else 0, 10**n - 1)

    out = []
    for _ in range(count):
        a, b = number(), number()
        if operation == "subtract" and b > a:
            a, b = b, a
        out.append(Problem(a, b, operation))
    return out


def digit_tokens(tokenizer: Any, text: str) -> list[str]:
    """How `tokenizer` (a transformers tokenizer) cuts `text`, token strings decoded one by one."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [tokenizer.decode([i]) for i in ids]


@dataclass
class DigitsReport:
    """Accuracy per grouping (same problems under each), with per-problem rows."""

    model: str
    options: dict[str, Any]
    accuracy: dict[str, float]
    correct: dict[str, int]
    tokens_per_operand: dict[str, float]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "options": self.options, "accuracy": self.accuracy, "correct": self.correct,
                "tokens_per_operand": self.tokens_per_operand, "rows": self.rows}

    def table(self) -> str:
        n = self.options["num_problems"]
        lines = ["| grouping | correct | accuracy | tokens per operand |", "|---|---|---|---|"]
        for g, acc in self.accuracy.items():
            lines.append(f"| {g} | {self.correct[g]}/{n} | {acc:.3f} | {self.tokens_per_operand[g]:.2f} |")
        return "\n".join(lines)


def _groupings(text: str) -> list[str]:
    names = [g.strip() for g in text.split(",") if g.strip()]
    bad = [g for g in names if g not in GROUPINGS]
    if not names or bad:
        raise InvalidOption(f"groupings must be a comma-separated list of {', '.join(GROUPINGS)}, got {text!r}",
                            param="groupings")
    return list(dict.fromkeys(names))


def digits(lm: Any, *, progress: bool = True, **options: Any) -> DigitsReport:
    """Ask `lm` the same generated arithmetic problems under each digit grouping; exact-match accuracy.

    Options (DigitsOptions): num_problems, min_digits, max_digits, operation, groupings, shots, seed,
    batch_size.

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> report = dl.tokenizer.digits(lm, num_problems=2, progress=False)
        >>> sorted(report.accuracy)
        ['l2r', 'none', 'r2l']
    """
    opts = check_options(DigitsOptions, options, "tokenizer digits")
    names = _groupings(opts.groupings)
    shots = problems(opts.shots, opts.min_digits, opts.max_digits, opts.operation, seed=opts.seed + 1_000_003)
    tests = problems(opts.num_problems, opts.min_digits, opts.max_digits, opts.operation, seed=opts.seed)
    max_new = 2 * opts.max_digits // 3 + opts.max_digits + 4  # the answer, its separators, a little slack
    report = DigitsReport(getattr(lm, "name", "model"), vars(opts), {}, {}, {})
    for g in names:
        prefix = "".join(p.worked(g) for p in shots)
        texts = answer_prompts(lm, [prefix + p.question(g) for p in tests], max_new_tokens=max_new,
                               batch_size=opts.batch_size, label=f"digits {g}" if progress else None)
        hits = 0
        for p, text in zip(tests, texts):
            ok = first_integer(text) == p.answer
            hits += ok
            report.rows.append({"grouping": g, "a": p.a, "b": p.b, "answer": p.answer, "output": text, "correct": ok})
        report.correct[g] = hits
        report.accuracy[g] = hits / len(tests)
        operands = [group_digits(str(x), g) for p in tests for x in (p.a, p.b)]
        report.tokens_per_operand[g] = sum(len(digit_tokens(lm.tokenizer, s)) for s in operands) / len(operands)
    return report


__all__ = ["group_digits", "problems", "Problem", "digits", "DigitsReport", "digit_tokens", "GROUPINGS"]
