"""A tiny byte-level BPE model and brute-force byte laws, independent of decodelab.bytes.

The vocabulary (built with the `tokenizers` library, GPT-2 style: bytes written as printable
characters, ByteLevel pre-tokenizer and decoder) has the bytes of "a", "b", " " and the two bytes
of "é" (0xC3 0xA9), plus merges, so most short strings have many tokenizations, canonical or not.
The model is a random Llama over those 14 ids with a large init, so its laws are peaked.
"""

from __future__ import annotations

import math

import torch

import decodelab as dl

# GPT-2's printable stand-ins: "Ġ" is the space byte, "Ã" 0xC3, "©" 0xA9
PIECES = ["<eos>", "a", "b", "Ġ", "Ã", "©", "ab", "ba", "aa", "Ġa", "Ġb", "Ã©", "aba", "Ġab"]
MERGES = [("a", "b"), ("b", "a"), ("a", "a"), ("Ġ", "a"), ("Ġ", "b"), ("Ã", "©"), ("ab", "a"), ("Ġa", "b")]
BYTES = [None, b"a", b"b", b" ", b"\xc3", b"\xa9", b"ab", b"ba", b"aa", b" a", b" b", b"\xc3\xa9", b"aba", b" ab"]


def bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE({p: i for i, p in enumerate(PIECES)}, list(MERGES)))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>")


def tiny_bpe_lm(seed: int = 0, init_std: float = 0.4) -> dl.LM:
    base = dl.load("tiny-random", vocab_size=len(PIECES), seed=seed, init_std=init_std)
    return dl.LM(model=base.model, tokenizer=bpe_tokenizer(), name=f"tiny-bpe(seed={seed})")


CONTEXT = [2]  # the text follows the token "b" (the end token embeds to zero: padding index)


def all_logprobs(lm: dl.LM, tokens: list[int]) -> torch.Tensor:
    """Next-token log-probabilities [len(tokens) + 1, V] along CONTEXT + tokens (one fresh forward)."""
    with torch.inference_mode():
        logits = lm.model(torch.tensor([CONTEXT + list(tokens)])).logits[0, len(CONTEXT) - 1:]
    return torch.log_softmax(logits.double(), -1)


def next_token_logprobs(lm: dl.LM, tokens: list[int]) -> torch.Tensor:
    return all_logprobs(lm, tokens)[-1]


def seq_logprob(lm: dl.LM, tokens: list[int], then: int | None = None) -> float:
    """log P(the model's first tokens are `tokens` [followed by `then`])."""
    lp = all_logprobs(lm, tokens)
    steps = list(tokens) + ([then] if then is not None else [])
    return float(sum(lp[i, t] for i, t in enumerate(steps)))


def tokenizations(data: bytes) -> list[list[int]]:
    """Every token sequence whose bytes are exactly `data`."""
    if not data:
        return [[]]
    out = []
    for t, piece in enumerate(BYTES):
        if piece and data.startswith(piece):
            out += [[t] + rest for rest in tokenizations(data[len(piece):])]
    return out


def covers(data: bytes) -> list[list[int]]:
    """Every cover encoding: tokens of data[:j] (j < len) then one token starting with data[j:]."""
    out = []
    for j in range(len(data)):
        for head in tokenizations(data[:j]):
            out += [head + [t] for t, piece in enumerate(BYTES) if piece and piece.startswith(data[j:])]
    return out


def logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def string_logprob(lm: dl.LM, data: bytes) -> float:
    """log P(text == data): every tokenization followed by the end token."""
    return logsumexp([seq_logprob(lm, c, then=0) for c in tokenizations(data)])


def prefix_logprob(lm: dl.LM, data: bytes) -> float:
    """log P(text starts with data): every cover encoding."""
    return logsumexp([seq_logprob(lm, c) for c in covers(data)])


def head_law(lm: dl.LM, length: int) -> dict[tuple[bytes, bool], float]:
    """Exact law of (the first `length` bytes of the text, whether it ended before), by walking
    every token sequence until it covers `length` bytes or ends."""
    law: dict[tuple[bytes, bool], float] = {}
    frontier = [([], b"", 0.0)]
    while frontier:
        tokens, text, logw = frontier.pop()
        lp = next_token_logprobs(lm, tokens)
        for t, piece in enumerate(BYTES):
            w = logw + float(lp[t])
            if piece is None:
                key = (text, True)
            elif len(text + piece) >= length:
                key = ((text + piece)[:length], False)
            else:
                frontier.append((tokens + [t], text + piece, w))
                continue
            law[key] = law.get(key, 0.0) + math.exp(w)
    return law


def next_byte_law_after(lm: dl.LM, context: list[int], tail: bytes) -> dict[int, float]:
    """Exact law of the byte after `tail` (256: end of text) given that the text after `context`
    starts with `tail`, by walking every token sequence consistent with `tail`."""
    law: dict[int, float] = {}
    frontier = [([], b"", 0.0)]
    while frontier:
        tokens, text, logw = frontier.pop()
        with torch.inference_mode():
            logits = lm.model(torch.tensor([context + tokens])).logits[0, -1]
        lp = torch.log_softmax(logits.double(), -1)
        for t, piece in enumerate(BYTES):
            w = logw + float(lp[t])
            if piece is None:
                if text == tail:
                    law[256] = law.get(256, 0.0) + math.exp(w)
                continue
            new = text + piece
            if len(new) > len(tail) and new.startswith(tail):
                law[new[len(tail)]] = law.get(new[len(tail)], 0.0) + math.exp(w)
            elif tail.startswith(new):
                frontier.append((tokens + [t], new, w))
    total = sum(law.values())
    return {b: p / total for b, p in law.items()}
