"""`LM`: a loaded causal language model with its tokenizer, and prompt encoding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from ..errors import InvalidPrompt
from ..text import check_text
from .attention import use_step_consistent_attention

Message = dict[str, str]
Prompt = str | list[Message] | list[int]


@dataclass
class LM:
    """A causal LM and its tokenizer on one device and dtype.

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> lm.vocab_size
        64
    """

    model: Any
    tokenizer: Any
    name: str
    chat: bool = False
    eos_token_ids: frozenset[int] = field(default_factory=frozenset)
    weights: str = "fp32"  # weight precision as loaded (models.weights); set by load()
    weights_report: Any = None
    gguf_path: Any = None  # the GGUF file the weights came from, if any

    def __post_init__(self) -> None:
        self.model.eval()
        self.model.requires_grad_(False)
        use_step_consistent_attention(self.model)  # verify forwards compute what one-token steps compute
        if not self.eos_token_ids:
            self.eos_token_ids = frozenset(_eos_ids(self.model, self.tokenizer))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The activation dtype (bfloat16 for int4/int8/bf16 weights); logits are always float32."""
        return getattr(self.model, "_decodelab_dtype", None) or next(self.model.parameters()).dtype

    @property
    def vocab_size(self) -> int:
        """Width of the logits (may exceed the tokenizer's count of real tokens)."""
        head = self.model.get_output_embeddings()
        return int(getattr(head, "out_features", None) or head.weight.shape[0])

    @cached_property
    def vocabulary_digest(self) -> str:
        """A digest of the tokenizer's token-to-id map, computed once per model (reading the map of a
        150k-token tokenizer takes ~0.1 s, too slow to repeat on every request)."""
        import hashlib

        digest = hashlib.sha256()
        for token, index in sorted(self.tokenizer.get_vocab().items(), key=lambda item: item[1]):
            digest.update(f"{index}\x00{token}\x00".encode("utf-8", "surrogatepass"))
        return digest.hexdigest()

    def shares_vocabulary(self, other: LM) -> bool:
        """Whether `other` maps the same tokens to the same ids (same tokenizer, or an equal copy).

        Example:
            >>> import decodelab as dl
            >>> dl.load("tiny-random", vocab_size=64).shares_vocabulary(dl.load("tiny-random", vocab_size=64))
            True
        """
        return other.tokenizer is self.tokenizer or other.vocabulary_digest == self.vocabulary_digest

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = min(self.eos_token_ids) if self.eos_token_ids else 0
        return int(pad)

    def generation_defaults(self) -> dict[str, Any]:
        """Sampling settings from the model's own generation config (empty means greedy)."""
        config = getattr(self.model, "generation_config", None)
        if config is None or not getattr(config, "do_sample", False):
            return {}
        out: dict[str, Any] = {}
        for name in ("temperature", "top_k", "top_p", "min_p", "typical_p", "repetition_penalty"):
            value = getattr(config, name, None)
            if value is not None:
                out[name] = value
        return out

    def encode(self, prompt: Prompt, *, chat: bool | None = None) -> list[int]:
        """Token ids for a prompt: text (chat template for chat models unless chat=False),
        a list of chat messages, or a list of token ids used as given."""
        if isinstance(prompt, str):
            check_text(prompt, "the prompt")
            if not prompt.strip():
                raise InvalidPrompt("the prompt is empty")
            use_chat = self.chat if chat is None else chat
            if use_chat:
                return self.apply_chat_template([{"role": "user", "content": prompt}])
            ids = list(self.tokenizer(prompt)["input_ids"])
        elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(m, dict) for m in prompt):
            ids = self.apply_chat_template(list(prompt))
        elif isinstance(prompt, (list, tuple)) and prompt and all(_is_int(t) for t in prompt):
            ids = [int(t) for t in prompt]
            bad = [t for t in ids if not 0 <= t < self.vocab_size]
            if bad:
                raise InvalidPrompt(f"token id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})")
        elif isinstance(prompt, (list, tuple)) and not prompt:
            raise InvalidPrompt("the prompt is empty")
        else:
            raise InvalidPrompt(
                "a prompt is a string, a list of chat messages ({'role', 'content'}) or a list of token ids"
            )
        if not ids:
            raise InvalidPrompt("the prompt encodes to no tokens")
        return ids

    def apply_chat_template(self, messages: list[Message]) -> list[int]:
        for i, message in enumerate(messages):
            check_chat_message(message, i)
        if not any(m["content"].strip() for m in messages):
            raise InvalidPrompt("the prompt is empty")
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        # No template: join turns plainly so that message prompts still work on base models.
        text = "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"
        return list(self.tokenizer(text)["input_ids"])

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_text(self, token_id: int) -> str:
        """The text of one token as it appears in the output (no special-token skipping)."""
        return self.tokenizer.decode([int(token_id)], skip_special_tokens=False)

    def __repr__(self) -> str:
        return f"LM({self.name!r}, vocab={self.vocab_size}, layers={self.num_layers}, weights={self.weights})"


CHAT_ROLES = ("system", "developer", "user", "assistant")


def check_chat_message(message: Any, index: int = 0) -> None:
    """A chat message is {'role': one of CHAT_ROLES, 'content': valid text}; InvalidPrompt otherwise
    (the server and the CLI use the same check, so the message is the same everywhere)."""
    where = f"message {index}"
    if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
            or not isinstance(message.get("content"), str):
        raise InvalidPrompt(f"{where}: each chat message needs string 'role' and 'content'")
    extra = sorted(set(message) - {"role", "content", "name"})
    if extra:
        raise InvalidPrompt(f"{where}: unknown field(s) {', '.join(map(str, extra))}; a message has role and content")
    if message["role"] not in CHAT_ROLES:
        raise InvalidPrompt(f"{where}: role must be one of {', '.join(CHAT_ROLES)}, got {message['role'][:40]!r}")
    check_text(message["content"], f"{where} content")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) or (
        isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point()
    )


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    config = getattr(model, "generation_config", None)
    for source in (getattr(config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(t) for t in source)
    return ids
