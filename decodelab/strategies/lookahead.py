"""Short rollouts from the running sequence, for strategies that look ahead before they choose
(AdaDec's lookahead reranking, Cautious Next Token Prediction's trials).

`fork` copies the batch's KV cache by reference (a copied `engine.kv_cache.SlotLayer` and its
original share their buffers until either writes, and then copy them first, so the fork never
writes into the original) and keeps the rows asked for, repeated as needed;
`rollout` extends every forked row by a few tokens in one forward per step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from collections.abc import Sequence as Seq

import torch

from ..engine.sequence import Sequence
from ..models.lm import LM


def fork(seq: Sequence, rows: Seq[int], drop: Seq[int] | None = None) -> Sequence:
    """A new Sequence holding `rows` of `seq` (batch indices, repeats allowed), each first cut by
    drop[b] trailing tokens; `seq` itself is left as it was."""
    new = copy.copy(seq)
    new.cache = copy.copy(seq.cache)
    new.cache.layers = [copy.copy(layer) for layer in seq.cache.layers]
    new.ids = [list(r) for r in seq.ids]
    new.slot_valid = seq.slot_valid.clone()
    new.next_pos = seq.next_pos.clone()
    new.keep_hidden_states, new.hidden_states = False, None
    if drop is not None and any(drop):
        new.rollback(list(drop))
    new.select_rows(list(rows))
    return new


def rollout(seq: Sequence, first: torch.Tensor, steps: int,
            pick: Callable[[torch.Tensor], torch.Tensor], stop: torch.Tensor | None = None,
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Extend each row of `seq` by `first` [M] and then `steps` tokens chosen by `pick(logprobs [M, V])`.

    Returns tokens [M, steps + 1], the model's log-probabilities of tokens 1.. [M, steps] and how
    many tokens each row keeps [M]: all, or up to and including its first `stop` token (bool [V]).
    """
    tokens = [first]
    logprobs = []
    kept = torch.full_like(first, steps + 1)
    done = torch.zeros_like(first, dtype=torch.bool)
    for j in range(steps + 1):
        if stop is not None:
            hit = stop[tokens[-1]] & ~done
            kept = torch.where(hit, torch.full_like(kept, j + 1), kept)
            done |= hit
        if j == steps or (stop is not None and bool(done.all())):
            break
        lp = seq.forward(tokens[-1][:, None])[:, -1].float().log_softmax(-1)
        nxt = pick(lp)
        logprobs.append(lp.gather(-1, nxt[:, None]).squeeze(-1))
        tokens.append(nxt)
    out = torch.stack(tokens, 1)
    lps = torch.stack(logprobs, 1) if logprobs else out.new_zeros((len(first), 0), dtype=torch.float32)
    return out, lps, kept.clamp(max=out.shape[1])


_PUNCTUATION: dict[int, torch.Tensor] = {}


def punctuation_tokens(lm: LM) -> torch.Tensor:
    """Bool [V]: tokens whose text holds sentence punctuation or a newline (cached per model)."""
    key = id(lm.model)
    if key not in _PUNCTUATION:
        texts = lm.tokenizer.batch_decode([[i] for i in range(lm.vocab_size)])
        marks = set(".,;:!?\n")
        mask = torch.tensor([bool(marks & set(t)) for t in texts], device=lm.device)
        for eos in lm.eos_token_ids:
            mask[eos] = True
        _PUNCTUATION[key] = mask
    return _PUNCTUATION[key]
