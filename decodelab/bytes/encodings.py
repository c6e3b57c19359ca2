"""The likeliest tokenizations of a text, canonical or not, with the mass they carry.

Geh et al. (2024), "Where is the signal in tokenization space?", and the "Say Anything but This"
line of work (issue 15): a token LM puts probability on many tokenizations of the same text; the canonical one (what the tokenizer
produces) is usually, not always, the likeliest, and the others carry the rest of the text's
probability. `encodings` lists the top-K tokenizations by P(tokens, then end of text), found by
best-first search over the byte lattice (log P(tokens) only falls as tokens are added, so the
first K complete tokenizations popped are exactly the top K), and reports each one's share of
P(text) = the sum over all tokenizations (from `ByteLM` with pruning off).

Example:
    >>> import decodelab as dl
    >>> rows = encodings(dl.load("tiny-random", vocab_size=64), "ab", top=2)
    >>> [r["token_ids"] for r in rows]
    [[6, 23]]
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Any

import torch

from ..errors import InvalidOption, InvalidPrompt
from ..models.lm import LM
from .bytelm import ByteLM, _as_bytes
from .vocab import ByteVocab

MAX_EXPANSIONS = 2000


def encodings(lm: LM, text: str | bytes, *, top: int = 5, context: list[int] | None = None,
              max_expansions: int = 200) -> list[dict[str, Any]]:
    """The `top` likeliest tokenizations of `text`: token ids, pieces, logprob (tokens then end of
    text), share of P(text), and whether it is the canonical tokenization."""
    if isinstance(top, bool) or not 1 <= int(top) <= 1000:
        raise InvalidOption(f"top must be in 1..1000, got {top}")
    if not 1 <= int(max_expansions) <= MAX_EXPANSIONS:
        raise InvalidOption(f"max_expansions must be in 1..{MAX_EXPANSIONS}, got {max_expansions}")
    data = _as_bytes(text)
    if not data:
        raise InvalidPrompt("the text is empty")
    bl = ByteLM(lm, context, prune=0, max_hypotheses=None) if len(data) <= 24 else ByteLM(lm, context)
    total = bl.logprob(data, end=True)
    vocab = ByteVocab.of(lm)
    canonical = list(lm.tokenizer(data.decode("utf-8", errors="replace"), add_special_tokens=False)["input_ids"])
    matches = _token_matches(vocab, data)
    counter = itertools.count()
    queue: list[tuple[float, int, list[int], int, bool]] = [(-0.0, next(counter), [], 0, False)]
    found: list[dict[str, Any]] = []
    expansions = 0
    while queue and len(found) < top and expansions < max_expansions:
        neg, _, tokens, pos, final = heapq.heappop(queue)
        if final:
            found.append({"token_ids": tokens, "pieces": [lm.token_text(t) for t in tokens], "logprob": -neg,
                          "share": math.exp(-neg - total), "canonical": tokens == canonical})
            continue
        logp = _next_logprobs(lm, bl, tokens, vocab)
        expansions += 1
        if pos == len(data):
            end = float(torch.logsumexp(logp[vocab.end_ids], 0))
            heapq.heappush(queue, (neg - end, next(counter), tokens, pos, True))
            continue
        for t, length in matches[pos]:
            heapq.heappush(queue, (neg - float(logp[t]), next(counter), tokens + [t], pos + length, False))
    return found


def _token_matches(vocab: ByteVocab, data: bytes) -> list[list[tuple[int, int]]]:
    """Per byte position, the (token, length) pairs whose bytes occur in `data` there."""
    out = []
    for pos in range(len(data)):
        here = []
        for end in range(pos + 1, min(len(data), pos + vocab.max_len) + 1):
            here += [(t, end - pos) for t in vocab.exact(data[pos:end])]
        out.append(here)
    return out


def _next_logprobs(lm: LM, bl: ByteLM, tokens: list[int], vocab: ByteVocab) -> torch.Tensor:
    with torch.inference_mode():
        logits = lm.model(torch.tensor([bl.context + tokens], device=lm.device)).logits[0, -1]
    return torch.log_softmax(logits.double().cpu().masked_fill(~vocab.allowed, float("-inf")), -1)
