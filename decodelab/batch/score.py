"""Teacher-forced scoring: the log-probability of each token of a given completion.

The prompt is encoded as `generate` encodes it (chat template for chat models unless
`chat=False`), the completion is tokenized without special tokens, and the engine's `Sequence`
runs one prefill over the prompt and one forward over the completion (teacher forcing), so the
log-probabilities are the ones sampling would have used at each position, under the model's raw
distribution (no sampler processing), like the `logprob` column of `generate`'s records.

Example:
    >>> import decodelab as dl
    >>> lm = dl.load("tiny-random", vocab_size=64)
    >>> s = completion_logprobs(lm, "hello", " there", chat=False)
    >>> len(s["logprobs"]) == len(s["token_ids"]) == 6
    True
"""

from __future__ import annotations

from typing import Any

import torch

from ..engine.sequence import Sequence
from ..errors import InvalidPrompt
from ..models.lm import LM, Prompt


def completion_ids(lm: LM, completion: Any) -> list[int]:
    """Token ids of a completion: text (no special tokens added) or a list of token ids."""
    if isinstance(completion, str):
        ids = list(lm.tokenizer(completion, add_special_tokens=False)["input_ids"])
    elif isinstance(completion, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in completion):
        ids = list(completion)
        if any(not 0 <= t < lm.vocab_size for t in ids):
            raise InvalidPrompt(f"a completion token id is outside the vocabulary (0..{lm.vocab_size - 1})")
    else:
        raise InvalidPrompt("a completion is text or a list of token ids")
    if not ids:
        raise InvalidPrompt("the completion is empty")
    return ids


@torch.inference_mode()
def completion_logprobs(lm: LM, prompt: Prompt, completion: Any, *, chat: bool | None = None) -> dict[str, Any]:
    """Per-token log-probability and entropy of `completion` after `prompt`, with their sums."""
    prompt_ids = lm.encode(prompt, chat=chat)
    ids = completion_ids(lm, completion)
    seq = Sequence(lm, [prompt_ids])
    seq.check_room(len(prompt_ids) + len(ids))
    first = seq.prefill()[:, None]
    logits = torch.cat([first, seq.forward([ids[:-1]])], dim=1)[0] if len(ids) > 1 else first[0]
    logprobs = logits.float().log_softmax(-1)
    targets = torch.tensor(ids, device=logprobs.device)
    chosen = logprobs.gather(-1, targets[:, None]).squeeze(-1)
    entropy = -(logprobs.exp() * logprobs).nan_to_num().sum(-1)
    total = float(chosen.sum())
    return {"token_ids": ids, "tokens": [lm.token_text(t) for t in ids], "logprobs": chosen.tolist(),
            "entropy": entropy.tolist(), "sum_logprob": total, "mean_logprob": total / len(ids),
            "prompt_tokens": len(prompt_ids)}
