"""Model fingerprints: find a hidden trigger by unconditional token forcing, and test a claimed
(trigger, response) fingerprint with a p-value.

Papers: Hoscilowicz et al. 2024, *Unconditional token forcing: extracting text hidden within LLM*
(UTF: feed every vocabulary token alone and decode greedily; a fingerprint planted by fine-tuning
shows up as a continuation of abnormally high probability); Xu et al. 2024, *Instructional
fingerprinting of large language models* (a secret trigger -> response pair planted by training).

- `find_triggers(lm, length=...)`: every token of the vocabulary is one row of a batch, each row is
  decoded greedily for `length` tokens, and rows are ranked by the mean log-probability of their
  continuation. This is a search, not a test: it has no p-value.
- `verify_fingerprint(lm, trigger, response, ...)`: the owner drew `response` at random (words or
  letters, `identifiers.make_identifier`) before planting it; the test ranks log p(response |
  trigger) among fresh draws of the same generator after the same trigger, so the p-value is exact
  under the null "this model was never trained on the pair" (the identifier test with the trigger
  as prefix).

Example:
    >>> import decodelab as dl
    >>> lm = dl.load("tiny-random", vocab_size=40)
    >>> found = find_triggers(lm, length=4, top=3)
    >>> len(found), found[0].score >= found[-1].score
    (3, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..engine.full_forward import full_logits
from ..errors import InvalidOption
from ..models.lm import LM
from .identifiers import IdentifierResult, detect_identifiers
from .likelihood import start_ids
from .texts import check_model

MAX_FORCE_LENGTH = 256
MAX_VOCAB_ROWS = 1 << 20


@dataclass
class TriggerCandidate:
    """One vocabulary token forced alone, its greedy continuation and that continuation's mean
    log-probability (`score`)."""

    token_id: int
    token: str
    continuation: str
    continuation_ids: list[int]
    score: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_triggers(lm: LM, *, length: int = 16, top: int = 10, batch_rows: int = 256,
                  token_ids: Sequence[int] | None = None) -> list[TriggerCandidate]:
    """Unconditional token forcing over the vocabulary (or `token_ids`): the `top` tokens whose greedy
    continuation of `length` tokens is the most probable."""
    check_model(lm)
    if not 1 <= length <= MAX_FORCE_LENGTH:
        raise InvalidOption(f"length must be in [1, {MAX_FORCE_LENGTH}], got {length}", param="length")
    if not 1 <= batch_rows <= 4096:
        raise InvalidOption("batch_rows must be in [1, 4096]", param="batch_rows")
    candidates = torch.arange(lm.vocab_size) if token_ids is None else torch.as_tensor(list(token_ids))
    if candidates.numel() == 0 or candidates.numel() > MAX_VOCAB_ROWS:
        raise InvalidOption("token_ids must hold 1 to 2^20 ids", param="token_ids")
    if bool(((candidates < 0) | (candidates >= lm.vocab_size)).any()):
        raise InvalidOption("a token id is outside the vocabulary", param="token_ids")
    if len(start_ids(lm)) + 1 + length > lm.context_length:
        raise InvalidOption(f"length {length} exceeds the model's context", param="length")
    top = max(1, min(top, candidates.numel()))
    start = torch.tensor(start_ids(lm), dtype=torch.long)
    scores, continuations = [], []
    for chunk in candidates.split(batch_rows):
        rows = torch.cat([start.expand(chunk.numel(), -1), chunk[:, None]], dim=1)
        total = torch.zeros(chunk.numel(), dtype=torch.float64)
        for _ in range(length):  # greedy, all rows of the chunk in one forward per step
            logits, _ = full_logits(lm, rows.tolist(), 1)
            logprobs = logits[:, -1].log_softmax(-1)
            best = logprobs.max(-1)
            total += best.values.double().cpu()
            rows = torch.cat([rows, best.indices.cpu()[:, None]], dim=1)
        scores.append(total / length)
        continuations.append(rows[:, start.numel() + 1:])
    score = torch.cat(scores)
    cont = torch.cat(continuations)
    order = score.topk(top).indices.tolist()
    return [TriggerCandidate(int(candidates[i]), lm.token_text(int(candidates[i])), lm.decode(cont[i].tolist()),
                             cont[i].tolist(), float(score[i])) for i in order]


def verify_fingerprint(lm: LM, trigger: str, response: str, *, kind: str = "chars", length: int | None = None,
                       alternatives: int = 999, seed: int = 0) -> IdentifierResult:
    """p-value that the model was trained on the fingerprint `trigger` -> `response`, where the
    response was drawn with `make_identifier(kind=kind, length=length)` (length defaults to the
    response's own: words or characters)."""
    if not isinstance(trigger, str) or not trigger:
        raise InvalidOption("the trigger must be non-empty text", param="trigger")
    if length is None:
        length = len(response.split()) if kind == "words" else len(response)
    (result,) = detect_identifiers(lm, [response], kind=kind, length=length, alternatives=alternatives, seed=seed,
                                   prefix=trigger)
    return result


__all__ = ["find_triggers", "verify_fingerprint", "TriggerCandidate"]
