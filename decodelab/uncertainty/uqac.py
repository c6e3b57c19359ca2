"""UQAC: uncertainty from the attention chain that leads to the answer.

Li, Wang, Zhang & Chen (2025), "Language Model Uncertainty Quantification with Attention Chain"
(UQAC). In a reasoning output, the answer depends on a few earlier tokens: follow attention back
from the answer tokens through the reasoning tokens, keep the tokens that receive much attention
(the "attention chain"), and score the answer by the probabilities of the tokens on that chain
instead of all tokens (most reasoning tokens are irrelevant to the answer's uncertainty).

Here: attention weights averaged over layers and heads, restricted to the output's own tokens and
renormalised; from the answer tokens (the output's last sentence by default), each step adds the
earlier output tokens that receive at least `threshold` of the current set's attention, for up to
`depth` steps. The score is -mean log p over the chain (higher: more uncertain). The paper also
merges tokens by semantic similarity and calibrates the chain's size; that is not done here.
The model runs eager attention for this one forward (attention weights are not returned by SDPA).

Example:
    >>> import decodelab as dl
    >>> lm = dl.load("tiny-random", vocab_size=16)
    >>> r = uqac(lm, [1, 5], [6, 7, 8, 9], answer_tokens=1, threshold=2.0)   # chain = the answer
    >>> r.chain
    [3]
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..engine.full_forward import full_logits
from ..errors import InvalidOption
from ..models.lm import LM, Prompt
from .claims import split_claims
from .score import encode_completion


@dataclass
class UQAC:
    value: float  # -mean log-probability over the chain
    chain: list[int]  # output positions on the attention chain, sorted
    answer: list[int]  # output positions of the answer


@contextlib.contextmanager
def eager_attention(lm: LM):
    """Run the model with eager attention (which returns attention weights) inside the block."""
    model = lm.model
    before = model.config._attn_implementation
    if before == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def attention_chain(attention: torch.Tensor, answer: list[int], threshold: float, depth: int) -> list[int]:
    """Positions reached from `answer` by following attention [T, T] (rows attend to columns)."""
    chain = set(answer)
    frontier = list(answer)
    for _ in range(depth):
        if not frontier:
            break
        weights = attention[frontier].mean(0)
        weights = weights / weights.sum().clamp(min=1e-12)
        reached = [int(j) for j in (weights >= threshold).nonzero().flatten().tolist() if int(j) not in chain]
        chain |= set(reached)
        frontier = reached
    return sorted(chain)


def uqac(lm: LM, prompt: Prompt, output: str | list[int], *, answer_tokens: int | None = None,
         threshold: float = 0.1, depth: int = 3, chat: bool | None = None) -> UQAC:
    """UQAC score of an output; `answer_tokens`: the answer is the last n tokens (default: the
    last sentence)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1e6:
        raise InvalidOption("threshold must be a number in [0, 1e6]")
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= 64:
        raise InvalidOption("depth must be an integer in [0, 64]")
    prompt_ids = lm.encode(prompt, chat=chat)
    ids = encode_completion(lm, output)
    T = len(ids)
    if answer_tokens is None:
        start = split_claims([lm.token_text(t) for t in ids])[-1:] or [(0, T)]
        answer = list(range(start[0][0], T))
    else:
        if isinstance(answer_tokens, bool) or not isinstance(answer_tokens, int) or not 1 <= answer_tokens <= T:
            raise InvalidOption(f"answer_tokens must be an integer in [1, {T}]")
        answer = list(range(T - answer_tokens, T))
    with eager_attention(lm):
        logits, attentions = full_logits(lm, [prompt_ids + ids], T + 1, attentions=True)
    logprobs = logits[0, :-1].log_softmax(-1).gather(-1, torch.tensor(ids, device=logits.device)[:, None])[:, 0]
    n = len(prompt_ids)
    attention = torch.stack([a[0].float().mean(0) for a in attentions]).mean(0)[n:, n:]  # output x output
    attention = attention.tril(-1)  # earlier tokens only
    chain = attention_chain(attention, answer, threshold, depth)
    return UQAC(-float(logprobs[chain].mean()), chain, answer)


__all__ = ["uqac", "attention_chain", "eager_attention", "UQAC"]
