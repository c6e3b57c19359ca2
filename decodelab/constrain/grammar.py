"""Grammars -> llguidance matchers: regex, JSON schema and Lark CFG, compiled once and cached.

llguidance (Moskal et al., Microsoft, 2024-2025, "llguidance: super-fast structured outputs")
turns a grammar plus a tokenizer into per-step token masks. This module owns the boundary:
it builds llguidance's tokenizer for a decodelab `LM` (any fast Hugging Face tokenizer, plus
the character-level tokenizer of `tiny-random`), validates and compiles grammars, caches both,
and hands out fresh `LLMatcher`s. Nothing here is approximate: a matcher says exactly which
tokens keep the text inside the language.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InvalidOption
from ..models.lm import LM


def parser_reason(error: str) -> str:
    """A grammar compiler's multi-line message as one line that keeps the reason: its first line and
    the lines that say `error: ...` (the echoed source and caret lines are dropped).

    Example:
        >>> parser_reason('invalid regex "a(b": regex parse error:\\n    a(b\\n     ^\\nerror: unclosed group\\n')
        'invalid regex "a(b": regex parse error: unclosed group'
    """
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    if not lines:
        return "the grammar compiler gave no reason"
    reasons = [line.split("error:", 1)[1].strip() for line in lines[1:] if line.startswith("error:")]
    return " ".join([lines[0], *reasons]) if reasons else lines[0] + (
        " " + " ".join(line for line in lines[1:] if set(line) - {"^", " "}) if lines[0].endswith(":") else "")


class InvalidConstraint(InvalidOption):
    """A regex, JSON schema or grammar that does not compile, or that matches no text."""


_LOCK = threading.Lock()
_TOKENIZERS: dict[tuple, tuple[Any, Any]] = {}  # key -> (hf tokenizer kept alive, LLTokenizer)
_GRAMMARS: dict[tuple, Grammar] = {}
_MAX_GRAMMARS = 256


class _CharTokenizer:
    """What `llguidance.TokenizerWrapper` needs, for tokenizers llguidance cannot read itself
    (tiny-random's WordLevel vocabulary with a Fuse decoder): each token's text as bytes."""

    def __init__(self, hf: Any, n_vocab: int):
        self.eos_token_id = hf.eos_token_id
        self.bos_token_id = hf.bos_token_id
        self.tokens = []
        for i in range(n_vocab):
            piece = hf.convert_ids_to_tokens(i) if i < len(hf) else None
            self.tokens.append(piece.encode("utf-8") if piece else b"")
        # Placeholder tokens (`<t12>`) are never produced by the tokenizer: treat them as special
        # so that no grammar admits them as literal text.
        self.special_token_ids = sorted(set(hf.all_special_ids) | {
            i for i, t in enumerate(self.tokens) if t.startswith(b"<") and t.endswith(b">") and len(t) > 1})
        self._hf = hf

    def __call__(self, text: str | bytes) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return list(self._hf(text, add_special_tokens=False)["input_ids"])


def ll_tokenizer(lm: LM) -> Any:
    """llguidance's tokenizer for this model (cached per tokenizer, EOS set and logits width).

    Example:
        >>> import decodelab as dl
        >>> tok = ll_tokenizer(dl.load("tiny-random", vocab_size=16))
        >>> tok.vocab_size
        16
    """
    import llguidance
    import llguidance.hf

    eos = sorted(lm.eos_token_ids) or [int(lm.tokenizer.eos_token_id or 0)]
    key = (id(lm.tokenizer), tuple(eos), lm.vocab_size)
    with _LOCK:
        hit = _TOKENIZERS.get(key)
        if hit is not None and hit[0] is lm.tokenizer:
            return hit[1]
    try:
        tok = llguidance.hf.from_tokenizer(lm.tokenizer, n_vocab=lm.vocab_size, eos_token=eos)
    except Exception:  # noqa: BLE001 - llguidance cannot read every decoder; fall back to token texts
        wrapper = llguidance.TokenizerWrapper(_CharTokenizer(lm.tokenizer, lm.vocab_size))
        tok = llguidance.LLTokenizer(wrapper, n_vocab=lm.vocab_size, eos_token=eos)
    with _LOCK:
        _TOKENIZERS[key] = (lm.tokenizer, tok)
    return tok


@dataclass(frozen=True)
class Grammar:
    """A compiled constraint for one model's tokenizer: hands out matchers and masks.

    `kind` is "regex", "json_schema" or "grammar" (Lark); `source` the user's text; `prefix`
    the text a healed prompt boundary makes the output start with (see `healed`).
    """

    kind: str
    source: str
    definition: str  # llguidance's grammar text
    tokenizer: Any  # llguidance.LLTokenizer
    vocab_size: int  # logits width
    real_vocab: int  # tokens the HF tokenizer really has (ids beyond are never allowed)
    eos_token_ids: tuple[int, ...]
    special_ids: tuple[int, ...] = ()
    prefix: str = ""

    def matcher(self) -> Any:
        """A fresh `llguidance.LLMatcher` at the start of the language."""
        import llguidance

        return llguidance.LLMatcher(self.tokenizer, self.definition, log_level=0)

    def healed(self, prefix: str) -> Grammar:
        """The grammar of `prefix` followed by this grammar (for token healing)."""
        if not prefix:
            return self
        inner = json.loads(self.definition) if self.definition.lstrip().startswith("{") else {
            "grammars": [{"lark_grammar": self.definition}]}
        subs = inner["grammars"]
        subs[0]["name"] = "constraint"
        top = {"lark_grammar": f"start: {json.dumps(prefix)} @constraint"}
        definition = json.dumps({"grammars": [top] + subs})
        return _finish(Grammar(self.kind, self.source, definition, self.tokenizer, self.vocab_size,
                               self.real_vocab, self.eos_token_ids, self.special_ids, self.prefix + prefix))

    def allows_text(self, text: str) -> bool:
        """Whether `text` is a complete member of the language (used by tests and the bench)."""
        m = self.matcher()
        ids = self.tokenizer.tokenize_str(text)
        return m.consume_tokens(ids) and m.is_accepting()


def compile_grammar(lm: LM, *, regex: str | None = None, json_schema: dict | str | None = None,
                    grammar: str | None = None) -> Grammar:
    """Compile exactly one of regex / JSON schema / Lark grammar for `lm`'s tokenizer (cached).

    Raises `InvalidConstraint` for text that does not compile or matches nothing.

    Example:
        >>> import decodelab as dl
        >>> g = compile_grammar(dl.load("tiny-random", vocab_size=16), regex="(ea|to)")
        >>> g.allows_text("to"), g.allows_text("tea")
        (True, False)
    """
    import llguidance

    given = [(k, v) for k, v in (("regex", regex), ("json_schema", json_schema), ("grammar", grammar))
             if v is not None]
    if len(given) != 1:
        raise InvalidConstraint("give exactly one of regex=, json_schema= or grammar=")
    kind, value = given[0]
    if kind == "json_schema":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise InvalidConstraint(f"json_schema is not valid JSON: {exc}") from None
        if not isinstance(value, (dict, bool)):
            raise InvalidConstraint("json_schema must be a JSON object (a dict or its JSON text)")
        source = json.dumps(value, sort_keys=True)
    else:
        if not isinstance(value, str) or not value:
            raise InvalidConstraint(f"{kind} must be a non-empty string")
        source = value
    tokenizer = ll_tokenizer(lm)
    key = (kind, source, id(tokenizer))
    with _LOCK:
        hit = _GRAMMARS.get(key)
    if hit is not None and hit.tokenizer is tokenizer:
        return hit
    if kind == "regex":
        definition = llguidance.LLMatcher.grammar_from_regex(source)
    elif kind == "grammar":
        definition = llguidance.LLMatcher.grammar_from_lark(source)
    else:
        try:
            definition = llguidance.LLMatcher.grammar_from_json_schema(source)
        except ValueError as exc:
            raise InvalidConstraint(f"invalid json_schema: {parser_reason(str(exc))}", param="json_schema") from None
    compiled = _finish(Grammar(kind, source, definition, tokenizer, lm.vocab_size,
                               min(len(lm.tokenizer), lm.vocab_size), tuple(sorted(lm.eos_token_ids)),
                               tuple(sorted(getattr(lm.tokenizer, "all_special_ids", ())))))
    with _LOCK:
        if len(_GRAMMARS) >= _MAX_GRAMMARS:
            _GRAMMARS.pop(next(iter(_GRAMMARS)))
        _GRAMMARS[key] = compiled
    return compiled


def _finish(g: Grammar) -> Grammar:
    """Validate: the grammar compiles and some text (possibly empty) can satisfy it."""
    import llguidance

    error = llguidance.LLMatcher.validate_grammar(g.definition, g.tokenizer)
    if error:
        raise InvalidConstraint(f"invalid {g.kind.replace('_', ' ')}: {parser_reason(error)}", param=g.kind)
    m = g.matcher()
    if m.is_error():
        raise InvalidConstraint(f"invalid {g.kind.replace('_', ' ')}: {parser_reason(m.get_error())}", param=g.kind)
    mask = masks_to_bool(fill_masks([(m, 0, [])], 1, g), g)[0]
    # special tokens write no text (llguidance admits EOS, or <unk>, alone in a dead end)
    mask[[t for t in set(g.eos_token_ids) | set(g.special_ids) if t < mask.shape[0]]] = False
    if not (bool(mask.any()) or m.is_accepting()):
        raise InvalidConstraint(f"the {g.kind.replace('_', ' ')} matches no text this model's tokens can write")
    return g


# --------------------------------------------------------------------------- masks
def fill_masks(jobs: list[tuple[Any, int, list[int]]], rows: int, g: Grammar) -> Any:
    """Bitmasks [rows, words] (numpy int32): job (matcher, row, drafts) fills row and, for each
    draft the matcher accepts, the next rows (llguidance walks the drafts and rolls back)."""
    import llguidance.numpy as lnp

    bitmask = lnp.allocate_token_bitmask(rows, g.tokenizer.vocab_size)
    if any(drafts for _, _, drafts in jobs):
        lnp.fill_next_token_bitmask_par_with_draft_tokens(_executor(), jobs, bitmask)
    else:
        lnp.fill_next_token_bitmask_par(_executor(), [(m, r) for m, r, _ in jobs], bitmask)
    return bitmask


def masks_to_bool(bitmask: Any, g: Grammar, device: torch.device | str = "cpu") -> torch.Tensor:
    """Bool [rows, V] from llguidance bitmasks, vectorised (ids past the real vocabulary: False).

    Unpacked with numpy on one thread: on a loaded 2-core machine, torch's intra-op threads
    made these small ops wait for a descheduled worker (tens of ms per mask).
    """
    import numpy as np

    rows = bitmask.shape[0]
    bits = np.unpackbits(np.ascontiguousarray(bitmask).view(np.uint8).reshape(rows, -1), axis=1, bitorder="little")
    width = min(g.real_vocab, bits.shape[1])
    out = np.zeros((rows, g.vocab_size), dtype=np.bool_)
    out[:, :width] = bits[:, :width]
    return torch.from_numpy(out).to(device)


_EXECUTOR: Any = None


def _executor() -> Any:
    global _EXECUTOR
    if _EXECUTOR is None:
        import llguidance

        # One worker thread: the machine's cores belong to the model's matmuls.
        _EXECUTOR = llguidance.LLExecutor(num_threads=1)
    return _EXECUTOR
