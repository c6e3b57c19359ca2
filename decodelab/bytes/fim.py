"""Fill-in-the-middle at any character position, for code models with FIM tokens (Qwen2.5-Coder).

Phan et al. (2024), "Exact Byte-Level Probabilities from Tokenized Language Models for FIM-Tasks
and Model Ensembles", section on FIM: a prefix cut at a random character ends inside a token,
so the prompt `<|fim_prefix|>prefix<|fim_suffix|>suffix<|fim_middle|>` carries a token the model
rarely saw there and the middle must start with the rest of it. Byte-level FIM moves the
prefix's last words out of the prompt and makes the middle start with their bytes, marginalising
over every tokenization that covers them (`heal.continue_bytes`); the middle is what follows.

Example:
    >>> import decodelab as dl
    >>> lm = dl.load("qwen2.5-coder-0.5b", weights="int4")  # doctest: +SKIP
    >>> dl.fim(lm, "def add(a, b):\\n    retu", "\\n\\nprint(add(1, 2))\\n").text  # doctest: +SKIP
    'rn a + b'
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import InvalidOption, InvalidPrompt
from ..models.lm import LM
from .heal import HealedOutput, continue_bytes, split_prompt

FIM_TOKENS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
# tokens that end a middle: the model's EOS and the other repository/FIM markers
STOP_TOKENS = ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>") + FIM_TOKENS


def fim_lm(lm: LM) -> LM:
    """The model with its FIM stop tokens as end-of-text (the same weights)."""
    vocab = lm.tokenizer.get_vocab()
    missing = [t for t in FIM_TOKENS if t not in vocab]
    if missing:
        raise InvalidOption(f"'{lm.name}' has no FIM tokens ({', '.join(missing)}); use a code model such as "
                            "qwen2.5-coder-0.5b")
    stops = set(lm.eos_token_ids) | {vocab[t] for t in STOP_TOKENS if t in vocab}
    cached = lm.__dict__.get("_decodelab_fim_lm")
    if cached is None or cached.eos_token_ids != frozenset(stops):
        cached = dataclasses.replace(lm, eos_token_ids=frozenset(stops))
        lm.__dict__["_decodelab_fim_lm"] = cached
    return cached


def fim(lm: LM, prefix: str, suffix: str, *, byte_level: bool = True, max_new_tokens: int = 64,
        temperature: float = 0.0, seed: int | None = None, words: int = 1, **options: Any) -> HealedOutput:
    """Generate the middle between `prefix` and `suffix`; `out.text` is the middle.

    byte_level=False is the usual token-level FIM prompt (the baseline). `words` pre-tokens of
    the prefix are backed up at the byte level.
    """
    if not isinstance(prefix, str) or not isinstance(suffix, str):
        raise InvalidPrompt("prefix and suffix must be text")
    if not prefix and not suffix:
        raise InvalidPrompt("fill-in-the-middle needs a prefix or a suffix")
    flm = fim_lm(lm)
    tok = flm.tokenizer

    def ids(text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False)["input_ids"]) if text else []

    pre, suf, mid = (tok.convert_tokens_to_ids(t) for t in FIM_TOKENS)
    head, tail = split_prompt(flm, prefix, words=words) if byte_level and prefix else (ids(prefix), b"")
    context = [pre] + head + [suf] + ids(suffix) + [mid]
    return continue_bytes(flm, context, tail, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                          **options)
