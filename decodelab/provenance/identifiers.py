"""Unique identifiers ("ghost sentences", data watermarks) that make a text collection's use in
training provable.

Papers: Zhao et al. 2024, *Protecting copyrighted material with unique identifiers in large
language model training* (ghost sentences: passphrases of random words inserted into a user's
documents, detected by the perplexity rank of the passphrase); Wei, Wang and Jia 2024, *Proving
membership in LLM pretraining data via data watermarks* (random sequences, a hypothesis test
against random alternatives from the same generator).

The owner draws an identifier at random (random words from a fixed list, or random letters),
inserts it into their texts (`insert`), and later tests a model (`detect`): the identifier's mean
token log-probability is ranked among `alternatives` fresh identifiers from the same generator.
If the model never trained on the identifier, the identifier is just one more draw of the
generator, exchangeable with the alternatives, so the rank p-value is exactly valid (uniform on the
grid 1/(N+1), ..., 1 up to ties) whatever the model. Memorisation makes the identifier more likely
than its alternatives and the p-value small.

Example:
    >>> ident = make_identifier(kind="words", length=4, seed=7)
    >>> texts, where = insert(["first text.", "second text."], ident, fraction=1.0, seed=0)
    >>> where, all(ident in t for t in texts)
    ([0, 1], True)
"""

from __future__ import annotations

import functools
import random
import string
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ..errors import InvalidOption
from ..models.lm import LM
from ..sampling.options import check_options, option
from .likelihood import text_logprobs
from .pvalues import rank_p_values
from .texts import check_model, check_texts

MAX_LENGTH = 64
MAX_ALTERNATIVES = 100_000
LETTERS = string.ascii_lowercase


@functools.cache
def word_list() -> tuple[str, ...]:
    """The 2048 words identifiers are drawn from (frequent lower-case words of the standard
    library's docstrings, 3-8 letters, frozen in words.txt so identifiers are reproducible)."""
    return tuple((Path(__file__).resolve().parent / "words.txt").read_text().split())


@dataclass
class IdentifierOptions:
    """Options of `dl.provenance.detect_identifiers` (also the CLI's and the server's)."""

    kind: Literal["words", "chars"] = option("words", "generator: random words (a passphrase) or random letters")
    length: int = option(6, "words or letters per identifier", ge=1, le=MAX_LENGTH)
    alternatives: int = option(999, "random identifiers each tested one is ranked against", ge=1,
                               le=MAX_ALTERNATIVES)
    seed: int = option(0, "seed of the alternatives", ge=0, le=2**63 - 1)
    prefix: str | None = option(None, "text put before every identifier (tested and alternatives alike)",
                                max_length=10_000)


def _draw(kind: str, length: int, rng: random.Random) -> str:
    if kind == "words":
        words = word_list()
        return " ".join(words[rng.randrange(len(words))] for _ in range(length))
    return "".join(LETTERS[rng.randrange(len(LETTERS))] for _ in range(length))


def make_identifier(*, kind: str = "words", length: int = 6, seed: int | None = None) -> str:
    """A random identifier: `length` random words (space-separated) or letters. Use a secret seed
    (None draws from the system's randomness) and keep the kind and length: `detect` needs them."""
    opts = check_options(IdentifierOptions, {"kind": kind, "length": length}, "make_identifier")
    rng = random.Random(seed) if seed is not None else random.SystemRandom()
    return _draw(opts.kind, opts.length, rng)


def insert(texts: Sequence[str], identifier: str, *, fraction: float = 1.0, seed: int = 0,
           ) -> tuple[list[str], list[int]]:
    """Put `identifier` into a random `fraction` of `texts`, each time at a random word boundary.
    Returns the new texts and the indices of those that carry it."""
    texts = check_texts(texts, "texts")
    (identifier,) = check_texts([identifier], "identifier")
    if not 0 < fraction <= 1:
        raise InvalidOption(f"fraction must be in (0, 1], got {fraction}", param="fraction")
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(len(texts)), max(1, round(fraction * len(texts)))))
    out = list(texts)
    for i in chosen:
        text = out[i]
        cuts = [0] + [j + 1 for j, c in enumerate(text) if c == " "] + [len(text)]
        at = cuts[rng.randrange(len(cuts))]
        left, right = text[:at], text[at:]
        out[i] = (left + (" " if left and not left.endswith(" ") else "") + identifier
                  + (" " if right and not right.startswith(" ") else "") + right)
    return out, chosen


@dataclass
class IdentifierResult:
    """One tested identifier: mean token log-probability, its rank p-value and the alternatives'."""

    index: int
    statistic: float
    p_value: float
    alternatives: int
    alternatives_mean: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_identifiers(lm: LM, identifiers: Sequence[str], **options: Any) -> list[IdentifierResult]:
    """p-value that the model memorised each identifier (drawn with the same `kind` and `length`).

    Each identifier is ranked against its own `alternatives` fresh draws (seeded by `seed` and its
    index), so the p-values of different identifiers are independent given the model."""
    check_model(lm)
    opts = check_options(IdentifierOptions, options, "identifiers")
    identifiers = check_texts(identifiers, "identifiers")
    if len(identifiers) * (opts.alternatives + 1) > MAX_ALTERNATIVES * 10:
        raise InvalidOption(f"identifiers x alternatives is at most {MAX_ALTERNATIVES * 10}", param="alternatives",
                            code="too_large")
    texts = []
    for i, ident in enumerate(identifiers):  # one forward batch for every identifier and its alternatives
        rng = random.Random(f"{opts.seed}:{i}")
        texts += [ident] + [_draw(opts.kind, opts.length, rng) for _ in range(opts.alternatives)]
    contexts = [opts.prefix] * len(texts) if opts.prefix else None
    stats = torch.tensor([float(lp.mean()) for lp in text_logprobs(lm, texts, contexts=contexts, what="identifier")])
    results = []
    for i, block in enumerate(stats.view(len(identifiers), opts.alternatives + 1)):
        p = float(rank_p_values(block[:1], block[1:])[0])
        results.append(IdentifierResult(i, float(block[0]), p, opts.alternatives, float(block[1:].mean())))
    return results


__all__ = ["make_identifier", "insert", "detect_identifiers", "IdentifierOptions", "IdentifierResult", "word_list"]
