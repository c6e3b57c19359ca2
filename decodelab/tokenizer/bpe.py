"""Byte-level BPE tokenizers as data: train one on known text, read a merge list, pre-tokenize text.

Support for Hayase et al. (2024), "Data Mixture Inference: What do BPE Tokenizers Reveal about their
Training Data?": the attack reads only the ordered merge list and the tokenizer's pre-tokenizer (the
rule that cuts text into words before merging). Training uses the `tokenizers` library (the same code
that trained most released byte-level BPE tokenizers), so a tokenizer trained here on a known mixture
is a faithful test case.

Example:
    >>> tok = train_bpe(["the cat sat on the mat"] * 50, num_merges=5)
    >>> merges_of(tok)[:2]
    [('a', 't'), ('h', 'e')]
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from ..errors import InvalidOption

MAX_MERGES = 100_000


def train_bpe(texts: Iterable[str], num_merges: int) -> Any:
    """A byte-level BPE `tokenizers.Tokenizer` with (at most) `num_merges` merges learnt from `texts`
    (GPT-2 style pre-tokenizer, all 256 bytes in the initial alphabet)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if not 1 <= num_merges <= MAX_MERGES:
        raise InvalidOption(f"num_merges must be in [1, {MAX_MERGES}], got {num_merges}", param="num_merges")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + num_merges, initial_alphabet=alphabet,
                                  show_progress=False, min_frequency=0)
    tok.train_from_iterator(texts, trainer)
    return tok


def as_backend(source: Any) -> Any:
    """A `tokenizers.Tokenizer` from a Tokenizer, a transformers fast tokenizer, a decodelab LM, or
    the path of a tokenizer.json file."""
    from tokenizers import Tokenizer

    if isinstance(source, Tokenizer):
        return source
    inner = getattr(source, "tokenizer", None)  # a decodelab LM
    if inner is not None and not isinstance(source, str):
        source = inner
    backend = getattr(source, "backend_tokenizer", None)  # a transformers fast tokenizer
    if backend is not None:
        return backend
    if isinstance(source, str):
        from ..text import read_text_file

        text = read_text_file(source, "tokenizer file", max_chars=200_000_000)
        try:
            return Tokenizer.from_str(text)
        except Exception as exc:  # the library raises a bare Exception on a malformed file
            raise InvalidOption(f"tokenizer file {source}: not a tokenizers JSON file ({str(exc)[:200]})",
                                param="tokenizer") from None
    raise InvalidOption(f"cannot read a tokenizer from {type(source).__name__}", param="tokenizer")


def merges_of(source: Any) -> list[tuple[str, str]]:
    """The ordered merge list of a byte-level BPE tokenizer (see `as_backend` for what `source` may be)."""
    model = json.loads(as_backend(source).to_str()).get("model", {})
    if model.get("type") != "BPE":
        raise InvalidOption(f"not a BPE tokenizer (model type {model.get('type')!r})", param="tokenizer")
    merges = []
    for m in model.get("merges", []):
        pair = tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1))
        if len(pair) != 2:
            raise InvalidOption(f"malformed merge {m!r} in the tokenizer", param="tokenizer")
        merges.append(pair)
    if not merges:
        raise InvalidOption("the tokenizer has no merges", param="tokenizer")
    return merges


def word_counts(source: Any, texts: Iterable[str]) -> Counter[str]:
    """How often each pre-token ("word", in the tokenizer's byte alphabet) occurs in `texts`."""
    tok = as_backend(source)
    if tok.pre_tokenizer is None:
        raise InvalidOption("the tokenizer has no pre-tokenizer; mixture inference needs a byte-level BPE "
                            "tokenizer (GPT-2 style)", param="tokenizer")
    counts: Counter[str] = Counter()
    for text in texts:
        if tok.normalizer is not None:
            text = tok.normalizer.normalize_str(text)
        counts.update(word for word, _ in tok.pre_tokenizer.pre_tokenize_str(text))
    return counts


__all__ = ["train_bpe", "merges_of", "word_counts", "as_backend", "MAX_MERGES"]
