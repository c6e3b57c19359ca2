"""Data mixture inference from a BPE merge list: a linear program over merge-order constraints.

Hayase, Liu, Choi, Oh, Smith (2024), "Data Mixture Inference: What do BPE Tokenizers Reveal about
their Training Data?" (NeurIPS 2024).

The idea: BPE training merges, at every step t, the pair of tokens that is most frequent in the
training text after merges 1..t-1. If the training text mixes categories with unknown shares alpha,
the pair frequency is the alpha-weighted sum of each category's frequency, so the merge actually
chosen, m_t, satisfies for every other pair p

    sum_i alpha_i * c_i^(t)(p)  <=  sum_i alpha_i * c_i^(t)(m_t)

where c_i^(t) are pair counts (per byte) in a sample of category i after replaying merges 1..t-1 on
it. Samples are finite and merges tie, so the constraints are relaxed as in the paper: a slack v_t
per merge step and a slack v_p per rival pair (a pair the samples over-represent at every step),
and the program minimises sum_t v_t + sum_p v_p over alpha in the simplex. Exact: the replay of
the merges (tests check it against the trainer) and the LP. Approximate: the category samples stand
in for the unknown training text, and (as in the paper) only the pairs most frequent in some
category at step t get a constraint (`top_pairs` per category): the others are far from being
merged.

Example:
    >>> from decodelab.tokenizer import builtin_categories, mixed_texts, train_bpe, infer_mixture
    >>> cats = builtin_categories(("english", "python"), max_chars=120_000)
    >>> tok = train_bpe(mixed_texts(cats, {"english": 0.3, "python": 0.7}, total_chars=50_000), 200)
    >>> result = infer_mixture(tok, cats)
    >>> abs(result.proportions["python"] - 0.7) < 0.1
    True
"""

from __future__ import annotations

import heapq
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np

from ..errors import InvalidOption
from .bpe import MAX_MERGES, merges_of, word_counts
from .corpora import Category

MAX_TOP_PAIRS = 1000
MAX_CATEGORIES = 64
MAX_MIX_CHARS = 50_000_000
MAX_CONSTRAINTS = 2_000_000  # num_merges x top_pairs x categories, at most: bounds the LP's memory


class MergeReplay:
    """Pair counts of one category's words while a merge list is applied to them, step by step."""

    def __init__(self, words: Counter[str]):
        self.words = [list(w) for w in words]
        self.freq = list(words.values())
        # one symbol of a byte-level word is one byte of the text (the alphabet's characters, such as
        # "Ġ" for a space, are not themselves one UTF-8 byte)
        self.bytes = sum(len(w) * f for w, f in words.items()) or 1
        self.pairs: Counter[tuple[str, str]] = Counter()
        self.where: dict[tuple[str, str], set[int]] = defaultdict(set)
        for index, (symbols, f) in enumerate(zip(self.words, self.freq)):
            for pair in zip(symbols, symbols[1:]):
                self.pairs[pair] += f
                self.where[pair].add(index)

    def top(self, k: int) -> list[tuple[str, str]]:
        return [p for p, _ in heapq.nlargest(k, self.pairs.items(), key=itemgetter(1))]

    def apply(self, merge: tuple[str, str]) -> None:
        a, b = merge
        joined = a + b
        for index in self.where.pop(merge, ()):
            symbols, f = self.words[index], self.freq[index]
            for pair in zip(symbols, symbols[1:]):
                self.pairs[pair] -= f
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
                    out.append(joined)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            self.words[index] = out
            for pair in zip(out, out[1:]):
                self.pairs[pair] += f
                self.where[pair].add(index)
        self.pairs = +self.pairs if len(self.pairs) > 4 * len(self.where) + 1024 else self.pairs


@dataclass
class MixtureResult:
    """Inferred category shares (summing to 1) and what the linear program saw."""

    proportions: dict[str, float]
    merges_used: int
    constraints: int
    total_slack: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"proportions": self.proportions, "merges_used": self.merges_used, "constraints": self.constraints,
                "total_slack": self.total_slack, "seconds": round(self.seconds, 3)}


def _check(categories: Mapping[str, Category], num_merges: int, top_pairs: int) -> None:
    if not 2 <= len(categories) <= MAX_CATEGORIES:
        raise InvalidOption(f"mixture inference needs 2 to {MAX_CATEGORIES} categories, got {len(categories)}",
                            param="categories")
    if not 1 <= num_merges <= MAX_MERGES:
        raise InvalidOption(f"num_merges must be in [1, {MAX_MERGES}], got {num_merges}", param="num_merges")
    if not 1 <= top_pairs <= MAX_TOP_PAIRS:
        raise InvalidOption(f"top_pairs must be in [1, {MAX_TOP_PAIRS}], got {top_pairs}", param="top_pairs")
    if num_merges * top_pairs * len(categories) > MAX_CONSTRAINTS:
        raise InvalidOption(f"num_merges x top_pairs x categories ({num_merges} x {top_pairs} x {len(categories)}) "
                            f"exceeds {MAX_CONSTRAINTS} constraints; lower num_merges or top_pairs", param="num_merges")


def infer_mixture(tokenizer: Any, categories: Mapping[str, Category], *, num_merges: int = 1000,
                  top_pairs: int = 30, merges: list[tuple[str, str]] | None = None,
                  progress: Callable[[int, int], None] | None = None) -> MixtureResult:
    """Estimate the share of each category in the text `tokenizer` was trained on, from its first
    `num_merges` merges and the held-out half of each category (`Category.heldout`).

    `tokenizer` gives the pre-tokenizer (and the merges unless `merges` is given: a negative control
    passes a shuffled list). `progress(done, total)` is called as merges are replayed."""
    _check(categories, num_merges, top_pairs)
    start = time.perf_counter()
    names = list(categories)
    merges = list(merges if merges is not None else merges_of(tokenizer))[:num_merges]
    replays = [MergeReplay(word_counts(tokenizer, categories[n].heldout)) for n in names]
    scale = np.array([1e6 / r.bytes for r in replays])  # counts per million bytes of each category
    n, steps = len(names), len(merges)
    rows: list[np.ndarray] = []
    row_step: list[int] = []
    row_pair: list[int] = []
    pair_ids: dict[tuple[str, str], int] = {}
    for t, merge in enumerate(merges):
        chosen = np.array([r.pairs.get(merge, 0) for r in replays], dtype=float)
        rivals = {p for r in replays for p in r.top(top_pairs)} - {merge}
        for pair in rivals:
            rows.append((np.array([r.pairs.get(pair, 0) for r in replays], dtype=float) - chosen) * scale)
            row_step.append(t)
            row_pair.append(pair_ids.setdefault(pair, len(pair_ids)))
        for r in replays:
            r.apply(merge)
        if progress is not None:
            progress(t + 1, steps)
    if not rows:
        raise InvalidOption("no merge-order constraints: the category samples share no token pairs", param="categories")
    solution = _solve(np.stack(rows), np.array(row_step), np.array(row_pair), steps, len(pair_ids))
    alpha = np.clip(solution.x[:n], 0, None)
    alpha = alpha / alpha.sum()
    return MixtureResult({name: float(a) for name, a in zip(names, alpha)}, steps, len(rows), float(solution.fun),
                         time.perf_counter() - start)


def _solve(coef: np.ndarray, row_step: np.ndarray, row_pair: np.ndarray, steps: int, pairs: int) -> Any:
    """min sum_t v_t + sum_p v_p  s.t.  coef[row] @ alpha <= v_t(row) + v_p(row), alpha in the simplex.

    Variables: alpha (n), one slack per merge step, one per rival pair (a pair that the category
    samples over-represent throughout, rather than at one step)."""
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix

    m, n = coef.shape
    width = n + steps + pairs
    data = np.concatenate([coef.ravel(), -np.ones(2 * m)])
    rows = np.concatenate([np.repeat(np.arange(m), n), np.arange(m), np.arange(m)])
    cols = np.concatenate([np.tile(np.arange(n), m), n + row_step, n + steps + row_pair])
    a_ub = csr_matrix((data, (rows, cols)), shape=(m, width))
    cost = np.concatenate([np.zeros(n), np.ones(steps + pairs)])
    a_eq = csr_matrix(np.concatenate([np.ones(n), np.zeros(steps + pairs)])[None, :])
    solution = linprog(cost, A_ub=a_ub, b_ub=np.zeros(m), A_eq=a_eq, b_eq=[1.0],
                       bounds=[(0, 1)] * n + [(0, None)] * (steps + pairs), method="highs")
    if solution.status != 0:
        raise InvalidOption(f"the linear program failed: {solution.message}", param="categories")
    return solution


def mixed_texts(categories: Mapping[str, Category], proportions: Mapping[str, float], total_chars: int,
                seed: int = 0) -> list[str]:
    """Training texts mixing the `train` halves of the categories: category i gives
    proportions[i] * total_chars characters (pieces in a seeded random order, cycled if the half is
    shorter, the last one cut to size)."""
    if not 1 <= total_chars <= MAX_MIX_CHARS:
        raise InvalidOption(f"total_chars must be in [1, {MAX_MIX_CHARS}], got {total_chars}", param="total_chars")
    unknown = set(proportions) - set(categories)
    if unknown:
        raise InvalidOption(f"proportions name unknown categories: {', '.join(sorted(unknown))}", param="proportions")
    weights = np.array([float(proportions.get(n, 0.0)) for n in categories])
    if not np.all(np.isfinite(weights)) or (weights < 0).any() or weights.sum() <= 0:
        raise InvalidOption("proportions must be non-negative numbers with a positive sum", param="proportions")
    weights = weights / weights.sum()
    rng = random.Random(seed)
    texts = []
    for cat, share in zip(categories.values(), weights):
        need = int(round(share * total_chars))
        order = list(cat.train)
        rng.shuffle(order)
        i = 0
        while need > 0:
            piece = order[i % len(order)][:need]
            texts.append(piece)
            need -= len(piece)
            i += 1
    rng.shuffle(texts)
    return texts


def random_proportions(names: list[str], rng: np.random.Generator) -> dict[str, float]:
    """A uniformly random point of the simplex over `names` (Dirichlet(1, ..., 1))."""
    return dict(zip(names, rng.dirichlet(np.ones(len(names))).tolist()))


def mean_absolute_error(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Mean over categories of |a_i - b_i|."""
    return float(np.mean([abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b)]))


__all__ = ["infer_mixture", "MixtureResult", "MergeReplay", "mixed_texts", "random_proportions",
           "mean_absolute_error"]
