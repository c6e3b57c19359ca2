"""Exact token healing: continue a prompt that ends inside a token as if the boundary were not there.

Lundberg (2023), "The Art of Prompt Design: Prompt Boundaries and Token Healing", named the
problem: a prompt that ends mid-word (or with a space) is tokenized as if the word ended there,
so the model continues from a token boundary it would rarely have seen. Token healing backs up
the last token and constrains the first generated token to start with its text; that is a local
fix (one token backed up, the first token renormalised under a mask), not the model's
conditional law. Exact healing (Phan et al. 2024; Hayase et al. 2025, see `bytelm`): back up
the last words, condition the byte-level model on their bytes by marginalising over every
tokenization that covers them, draw the covering token sequence from that posterior, and
continue with plain token decoding. At temperature 1 (no other sampler options) the text then
follows the token model's law conditioned on starting with the prompt, given the kept context
tokens; with temperature 0 the likeliest cover is taken, then greedy decoding.

Example:
    >>> import decodelab as dl
    >>> out = heal(dl.load("tiny-random", vocab_size=64), "the ca", max_new_tokens=4, temperature=0)
    >>> isinstance(out.text, str)
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..decoding.generate import generate
from ..decoding.records import GenerationOutput
from ..errors import InvalidOption, InvalidPrompt
from ..models.lm import LM
from .bytelm import ByteLM
from .vocab import ByteVocab

MAX_BACKUP_BYTES = 256
_CACHE_SIZE = 8  # ByteLMs kept per model, by context (repeated prompts reuse their tree)


@dataclass
class HealedOutput:
    """`text` / `data`: the continuation after the prompt (text / bytes); `token_ids`: every token
    after `context_ids` (the cover tokens first); `backed_up`: the prompt's bytes the cover tokens
    re-generate."""

    text: str
    data: bytes
    token_ids: list[int]
    context_ids: list[int]
    backed_up: bytes
    cover_logprob: float
    finish_reason: str
    output: GenerationOutput | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def split_prompt(lm: LM, prompt: str, *, words: int = 2, max_backup_bytes: int = 32) -> tuple[list[int], bytes]:
    """(context token ids, bytes to back up): the tokens of the last `words` pre-tokens (words,
    spaces) are backed up, at most `max_backup_bytes` bytes, at least one token."""
    if not isinstance(prompt, str) or not prompt:
        raise InvalidPrompt("token healing needs a non-empty text prompt")
    if not 1 <= int(max_backup_bytes) <= MAX_BACKUP_BYTES:
        raise InvalidOption(f"max_backup_bytes must be in 1..{MAX_BACKUP_BYTES}, got {max_backup_bytes}")
    ids = list(lm.tokenizer(prompt)["input_ids"])
    vocab = ByteVocab.of(lm)
    pieces = [vocab.pieces[t] or b"" for t in ids]
    data = b"".join(pieces)
    pre = lm.tokenizer.backend_tokenizer.pre_tokenizer
    starts = [len(prompt[:a].encode()) for _, (a, _) in pre.pre_tokenize_str(prompt)] if pre is not None else [0]
    boundary = max(starts[-words] if len(starts) >= words else 0, len(data) - int(max_backup_bytes))
    k, end = len(ids), len(data)
    while k > 0 and (end > boundary or k == len(ids)):
        k -= 1
        end -= len(pieces[k])
    return ids[:k], data[end:]


def _byte_lm(lm: LM, context: list[int]) -> ByteLM:
    cache = lm.__dict__.setdefault("_decodelab_heal_cache", {})
    key = tuple(context)
    if key not in cache:
        if len(cache) >= _CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[key] = ByteLM(lm, context or None)
    return cache[key]


def heal(lm: LM, prompt: str, *, max_new_tokens: int = 64, temperature: float | None = None,
         seed: int | None = None, words: int = 2, max_backup_bytes: int = 32, **options: Any) -> HealedOutput:
    """Generate after a text prompt with exact token healing (see the module docstring).

    `options` go to `dl.generate` for the tokens after the cover (e.g. top_p, stop).
    """
    context, tail = split_prompt(lm, prompt, words=words, max_backup_bytes=max_backup_bytes)
    return continue_bytes(lm, context, tail, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                          **options)


def continue_bytes(lm: LM, context: list[int], tail: bytes, *, max_new_tokens: int = 64,
                   temperature: float | None = None, seed: int | None = None, **options: Any) -> HealedOutput:
    """Generate after `context` token ids a text that starts with the bytes `tail`: draw the
    tokens that cover `tail` from the byte-level posterior, then decode tokens as usual."""
    if isinstance(max_new_tokens, bool) or not 1 <= int(max_new_tokens) <= 32768:
        raise InvalidOption(f"max_new_tokens must be in 1..32768, got {max_new_tokens}")
    bl = _byte_lm(lm, context)
    pairs, weights = bl.cover_tokens(tail)
    if not pairs:
        raise InvalidPrompt("no token sequence covers the end of this prompt")
    if temperature is None:
        temperature = float(lm.generation_defaults().get("temperature", 0.0))
    if temperature == 0:
        choice = int(weights.argmax())
    else:
        gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
        choice = int(torch.multinomial(torch.softmax(weights / float(temperature), 0), 1, generator=gen))
    tokens, last = pairs[choice]
    cover = tokens + [last]
    out = None
    finish = "length"
    if last in bl.vocab.end_ids:
        finish = "stop"
    elif max_new_tokens > 1:
        out = generate(lm, context + cover, max_new_tokens=max_new_tokens - 1, temperature=temperature,
                       seed=seed, **options)
        finish = out.finish_reason
    new = cover + (out.token_ids if out is not None else [])
    data = b"".join(bl.vocab.pieces[t] or b"" for t in new)[len(tail):]
    return HealedOutput(text=data.decode("utf-8", errors="replace"), data=data, token_ids=new, context_ids=context,
                        backed_up=tail, cover_logprob=float(weights[choice] - torch.logsumexp(weights, 0)),
                        finish_reason=finish, output=out,
                        stats={"model_calls": bl.model_calls, "hypotheses": len(bl.hyps)})
