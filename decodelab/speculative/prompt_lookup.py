"""Prompt lookup decoding: drafts copied from earlier text that follows the current suffix.

Saxena (2023), "Prompt Lookup Decoding" (github.com/apoorvumang/prompt-lookup-decoding), the
n-gram proposer also used by vLLM and Hugging Face (`prompt_lookup_num_tokens`); related to
Yang et al. (2023), "Inference with Reference: Lossless Acceleration of LLMs". The longest
suffix n-gram (n from `max_ngram` down to `min_ngram`) is searched in the prompt and the output
so far; the k tokens after its most recent earlier occurrence are the draft. Drafts are
deterministic (q is a point mass), so rejection sampling keeps the target's law exactly.
"""

from __future__ import annotations

import numpy as np
import torch

from ..decoding.loop import DecodeState
from ..decoding.protocols import Proposal, Verdict
from ..errors import InvalidOption
from .length import DraftLength


def find_continuation(context: np.ndarray, k: int, min_ngram: int, max_ngram: int) -> list[int]:
    """Up to k tokens that followed the most recent earlier match of the longest suffix n-gram."""
    length = len(context)
    for n in range(min(max_ngram, length - 1), min_ngram - 1, -1):
        suffix = context[-n:]
        windows = np.lib.stride_tricks.sliding_window_view(context[:-1], n)
        hits = np.flatnonzero((windows == suffix).all(1))
        # a match must be followed by at least one token that is not part of the suffix itself
        hits = hits[hits + n < length]
        if hits.size:
            start = int(hits[-1]) + n
            return context[start : start + k].tolist()
    return []


class PromptLookup:
    """Propose continuations found in the prompt/output (n-gram matching).

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> out = dl.generate(lm, "abcabcabc", speculative=PromptLookup(k=4), max_new_tokens=8, temperature=0)
    """

    def __init__(self, k: int = 10, min_ngram: int = 1, max_ngram: int = 3, length: DraftLength | None = None):
        for name, value in (("k", k), ("min_ngram", min_ngram), ("max_ngram", max_ngram)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidOption(f"{name} must be a positive integer, got {value!r}")
        if min_ngram > max_ngram:
            raise InvalidOption("min_ngram must not exceed max_ngram")
        self.k, self.min_ngram, self.max_ngram = k, min_ngram, max_ngram
        self.length = length

    def start(self, state: DecodeState) -> None:
        if self.length is not None:
            self.length.reset(len(state.active))

    def propose(self, state: DecodeState, budget: list[int]) -> Proposal:
        drafts = []
        for b, room in enumerate(budget):
            k = min(self.k, room)
            if self.length is not None:
                k = min(k, self.length.choose(b))
            context = np.asarray(state.context(b), dtype=np.int64)
            drafts.append(find_continuation(context, k, self.min_ngram, self.max_ngram) if k > 0 else [])
        width = max((len(d) for d in drafts), default=0)
        tokens = torch.zeros(len(drafts), width, dtype=torch.long)
        for b, draft in enumerate(drafts):
            tokens[b, : len(draft)] = torch.tensor(draft, dtype=torch.long)
        return Proposal(tokens, torch.tensor([len(d) for d in drafts], dtype=torch.long))

    def accepted(self, state: DecodeState, proposal: Proposal, verdict: Verdict) -> None:
        if self.length is not None:
            self.length.observe(proposal.lengths.tolist(), verdict.accepted.tolist())

    def select_rows(self, rows: list[int]) -> None:
        if self.length is not None:
            self.length.select_rows(rows)
