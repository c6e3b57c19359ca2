"""A small token n-gram model from an offline corpus, for rescoring (superposed decoding).

The corpus is decodelab's own packaged prompt suites (`decodelab/corpus/suites`, see its
SOURCES.md), tokenized with the model's tokenizer; no download. Probabilities are maximum
likelihood with backoff to shorter contexts (0 when even the unigram context is unseen).
"""

from __future__ import annotations

from collections import Counter, defaultdict

from ..models.lm import LM

_CACHE: dict[tuple[int, int], NgramModel] = {}


class NgramModel:
    """Counts of token n-grams, n = 1..order.

    Example:
        >>> m = NgramModel([[1, 2, 3, 1, 2, 4]], order=3)
        >>> m.prob([1, 2], 3), m.prob([9, 2], 4)
        (0.5, 0.5)
    """

    def __init__(self, documents: list[list[int]], order: int = 3):
        self.order = order
        self.counts: dict[tuple[int, ...], Counter] = defaultdict(Counter)
        for ids in documents:
            for n in range(1, order + 1):
                for i in range(len(ids) - n + 1):
                    self.counts[tuple(ids[i:i + n - 1])][ids[i + n - 1]] += 1

    def prob(self, context: list[int], token: int) -> float:
        """p(token | the last order-1 tokens of context), backing off to shorter contexts."""
        for n in range(min(self.order - 1, len(context)), -1, -1):
            seen = self.counts.get(tuple(context[len(context) - n:]) if n else ())
            if seen:
                return seen[token] / sum(seen.values())
        return 0.0


def corpus_ngrams(lm: LM, order: int = 3) -> NgramModel:
    """The n-gram model of the packaged prompt suites under this model's tokenizer (cached)."""
    from ..corpus import suite_texts

    key = (id(lm.tokenizer), order)
    if key not in _CACHE:
        docs = [lm.tokenizer.encode(text, add_special_tokens=False) for text in suite_texts()]
        _CACHE[key] = NgramModel(docs, order)
    return _CACHE[key]
