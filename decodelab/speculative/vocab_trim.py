"""VocabTrim: a draft whose head scores only the target's most frequent tokens.

Goel et al. (2025), "VocabTrim: Vocabulary Pruning for Efficient Speculative Decoding in
LLMs". With a 150k vocabulary the draft's output layer is a large share of its cost; keeping
the M most frequent tokens (counted on a corpus, e.g. the prompt suite and its generations)
shrinks that matmul. The draft then never proposes other tokens, but the verifier still lets
the target emit them through the residual or bonus token, so the output law is unchanged.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable

import torch

from ..errors import InvalidOption
from ..models.lm import LM
from .derived import derive_lm
from .draft_model import DraftModel


def frequent_tokens(lm: LM, texts: Iterable[str | list[int]], size: int) -> torch.Tensor:
    """Ids of the `size` most frequent tokens in `texts` (plus special tokens), sorted."""
    counts: Counter[int] = Counter()
    for text in texts:
        ids = text if isinstance(text, list) else lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        counts.update(int(t) for t in ids)
    keep = {t for t, _ in counts.most_common(size)}
    keep |= set(lm.eos_token_ids) | {int(t) for t in (lm.tokenizer.all_special_ids or []) if t < lm.vocab_size}
    return torch.tensor(sorted(keep), dtype=torch.long)


class VocabTrim(DraftModel):
    """A draft model restricted to a vocabulary subset.

    Example:
        >>> import decodelab as dl
        >>> target = dl.load("tiny-random", vocab_size=64)
        >>> spec = VocabTrim(dl.load("tiny-random", vocab_size=64, seed=1), token_ids=list(range(32)), k=3)
    """

    def __init__(self, draft: LM, token_ids: Iterable[int] | torch.Tensor, k: int = 5, **options):
        ids = torch.as_tensor(list(token_ids) if not isinstance(token_ids, torch.Tensor) else token_ids,
                              dtype=torch.long).unique()
        if ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= draft.vocab_size:
            raise InvalidOption(f"VocabTrim token ids must be a non-empty subset of 0..{draft.vocab_size - 1}")
        super().__init__(_trimmed(draft, ids), k=k, name="vocab-trim", **options)
        self.token_ids = ids

    @classmethod
    def from_corpus(cls, draft: LM, texts: Iterable[str | list[int]], size: int = 8192, k: int = 5,
                    **options) -> VocabTrim:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InvalidOption(f"size must be a positive integer, got {size!r}")
        return cls(draft, frequent_tokens(draft, texts, size), k=k, **options)


def _trimmed(draft: LM, token_ids: torch.Tensor) -> LM:
    """The trimmed view of `draft`, built once per model and subset (re-encoding a packed
    150k-row head takes seconds; a server builds the method for every request)."""
    memo = draft.__dict__.setdefault("_decodelab_trimmed_heads", {})
    key = hashlib.sha256(token_ids.numpy().tobytes()).hexdigest()
    if key not in memo:
        memo.clear()  # keep one subset per model: each holds a copy of its head rows
        memo[key] = derive_lm(draft, token_ids=token_ids)
    return memo[key]
