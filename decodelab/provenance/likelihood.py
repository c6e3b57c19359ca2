"""Teacher-forced log-probabilities of texts, optionally after a context: what every provenance test
reads from the model. One padded forward per batch (`engine.full_forward`), batches sized so that
the kept logits stay under a fixed memory budget.

Example:
    >>> import decodelab as dl
    >>> lm = dl.load("tiny-random", vocab_size=64)
    >>> [lp.shape[0] for lp in text_logprobs(lm, ["ab", "abc"])]
    [2, 3]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..engine.full_forward import full_logits
from ..errors import InvalidPrompt, PromptTooLong
from ..models.lm import LM

LOGIT_BUDGET = 1 << 25  # floats of kept logits per forward (128 MiB)


def start_ids(lm: LM) -> list[int]:
    """The token the first text token is scored after: BOS when the tokenizer has one, else EOS."""
    tok = lm.tokenizer
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    return [] if start is None else [int(start)]


def encode_text(lm: LM, text: str, what: str = "text") -> list[int]:
    """Token ids of a text without special tokens; an empty encoding is an error."""
    ids = list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    if not ids:
        raise InvalidPrompt(f"{what} encodes to no tokens")
    return ids


def target_logprobs(lm: LM, contexts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], *,
                    what: str = "text") -> list[torch.Tensor]:
    """log p(target_j | context, target_<j) for each pair, as float64 CPU tensors [len(target)]."""
    lengths = [len(c) + len(t) for c, t in zip(contexts, targets)]
    for i, n in enumerate(lengths):
        if n > lm.context_length:
            raise PromptTooLong(f"{what} {i} needs {n} tokens (context included); the model's context is "
                                f"{lm.context_length}")
    order = sorted(range(len(targets)), key=lambda i: lengths[i])
    out: list[torch.Tensor | None] = [None] * len(targets)
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order):  # grow the batch while its kept logits fit the budget
            keep = max(len(targets[i]) for i in order[start:end + 1]) + 1
            if (end + 1 - start) * keep * lm.vocab_size > LOGIT_BUDGET:
                break
            end += 1
        rows = order[start:end]
        keep = max(len(targets[i]) for i in rows) + 1
        logits, _ = full_logits(lm, [list(contexts[i]) + list(targets[i]) for i in rows], keep)
        logprobs = logits.log_softmax(-1)
        for b, i in enumerate(rows):
            n = len(targets[i])
            ids = torch.as_tensor(list(targets[i]), device=logprobs.device)
            picked = logprobs[b, keep - 1 - n: keep - 1].gather(-1, ids[:, None])[:, 0]
            out[i] = picked.double().cpu()
        start = end
    return out  # type: ignore[return-value]


def text_logprobs(lm: LM, texts: Sequence[str], *, contexts: Sequence[str | None] | None = None,
                  what: str = "text") -> list[torch.Tensor]:
    """Per text, the log-probability of each of its tokens (after the start token, or after a
    context text when given)."""
    if not texts:
        raise InvalidPrompt(f"no {what}s to score")
    start = start_ids(lm)
    prefixes, targets = [], []
    for i, (text, context) in enumerate(zip(texts, contexts or [None] * len(texts))):
        prefix = start + (encode_text(lm, context, "context") if context else [])
        target = encode_text(lm, text, f"{what} {i}")
        if not prefix:  # no start token and no context: the first token is given, not scored
            if len(target) < 2:
                raise InvalidPrompt(f"{what} {i} needs at least two tokens (the tokenizer has no BOS/EOS)")
            prefix, target = target[:1], target[1:]
        prefixes.append(prefix)
        targets.append(target)
    return target_logprobs(lm, prefixes, targets, what=what)


__all__ = ["text_logprobs", "target_logprobs", "encode_text", "start_ids"]
