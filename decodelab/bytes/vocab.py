"""`ByteVocab`: the bytes of every token, sorted, so that "tokens that extend these bytes" is a range.

A byte-level BPE vocabulary (GPT-2, SmolLM2, Qwen) writes each byte as one printable character
(`bytes_to_unicode`); we map tokens back to their bytes. Added tokens (chat markers, FIM markers)
are not text: they get zero probability in the byte-level model, except the end-of-text tokens.

Sorting the token byte strings makes the tokens whose bytes start with a pending string `r` one
contiguous range, split into 256 sub-ranges by the next byte, so the mass that a next-token
distribution puts on "r followed by byte b" is a difference of cumulative sums: no loop over the
vocabulary per step.

Example:
    >>> import decodelab as dl
    >>> vocab = ByteVocab.of(dl.load("tiny-random", vocab_size=64))
    >>> vocab.exact(b"a")  # token ids whose bytes are exactly b"a"
    [5]
"""

from __future__ import annotations

import bisect
from functools import lru_cache

import torch

from ..errors import InvalidOption
from ..models.lm import LM

END = 256  # index of end-of-text in a 257-way next-byte distribution


@lru_cache(maxsize=1)
def unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's `bytes_to_unicode`: the printable character standing for each byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def _is_byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and "ByteLevel" in repr(backend.decoder)


def token_bytes(lm: LM) -> list[bytes | None]:
    """The bytes of each logit index; None for added/special tokens and unused logit rows."""
    tok = lm.tokenizer
    added = set(getattr(tok, "added_tokens_decoder", {}) or {})
    pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
    if _is_byte_level(tok):
        table = unicode_to_byte()

        def to_bytes(piece: str) -> bytes | None:
            out = [table.get(ch) for ch in piece]
            return None if any(b is None for b in out) else bytes(out)
    elif type(getattr(tok.backend_tokenizer, "model", None)).__name__ == "WordLevel":  # tiny-random
        def to_bytes(piece: str) -> bytes | None:
            return piece.encode("utf-8")
    else:
        raise InvalidOption(f"byte-level probabilities need a byte-level BPE tokenizer (GPT-2 style); "
                            f"'{lm.name}' has another kind")
    out: list[bytes | None] = []
    for i in range(lm.vocab_size):
        piece = pieces[i] if i < len(pieces) else None
        out.append(None if piece is None or i in added else to_bytes(piece) or None)
    return out


class ByteVocab:
    """Token bytes sorted for range queries, the end-of-text ids, and the mask of text tokens."""

    def __init__(self, pieces: list[bytes | None], end_ids: list[int]):
        self.pieces = pieces
        self.size = len(pieces)
        self.end_ids = sorted(set(int(i) for i in end_ids))
        text_ids = [i for i, p in enumerate(pieces) if p is not None and i not in self.end_ids]
        text_ids.sort(key=lambda i: pieces[i])
        self.order = torch.tensor(text_ids, dtype=torch.long)  # sorted position -> token id
        self.sorted: list[bytes] = [pieces[i] for i in text_ids]  # type: ignore[misc]
        self.allowed = torch.zeros(self.size, dtype=torch.bool)
        self.allowed[self.order] = True
        self.allowed[self.end_ids] = True
        self.max_len = max(len(p) for p in self.sorted)
        self._groups: dict[bytes, tuple[torch.Tensor, int]] = {}

    @classmethod
    def of(cls, lm: LM, end_ids: list[int] | None = None) -> ByteVocab:
        """The vocabulary of a model, cached on the tokenizer (end-of-text: the model's EOS ids)."""
        ends = sorted(end_ids if end_ids is not None else lm.eos_token_ids)
        key = ("_decodelab_byte_vocab", tuple(ends), lm.vocab_size)
        cached = getattr(lm.tokenizer, "_decodelab_byte_vocab", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        if not ends:
            raise InvalidOption(f"'{lm.name}' has no end-of-text token")
        vocab = cls(token_bytes(lm), ends)
        try:
            lm.tokenizer._decodelab_byte_vocab = (key, vocab)
        except AttributeError:
            pass
        return vocab

    def groups(self, pending: bytes) -> tuple[torch.Tensor, int]:
        """(starts [257], first): sorted positions where the tokens "pending + byte b" begin
        (starts[256] ends the last group) and where the tokens equal to `pending` begin."""
        hit = self._groups.get(pending)
        if hit is None:
            first = bisect.bisect_left(self.sorted, pending)
            starts = [bisect.bisect_left(self.sorted, pending + bytes([b]), first) for b in range(256)]
            starts.append(bisect.bisect_left(self.sorted, pending + b"\xff" * (self.max_len + 1), first))
            hit = (torch.tensor(starts, dtype=torch.long), first)
            if len(self._groups) > 100_000:
                self._groups.clear()
            self._groups[pending] = hit
        return hit

    def exact(self, pending: bytes) -> list[int]:
        """Token ids whose bytes are exactly `pending`."""
        starts, first = self.groups(pending)
        return self.order[first:int(starts[0])].tolist()

    def extendable(self, pending: bytes) -> bool:
        """Whether some token's bytes strictly extend `pending`."""
        starts, _ = self.groups(pending)
        return int(starts[-1]) > int(starts[0])
