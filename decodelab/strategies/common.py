"""Helpers the strategies share: hidden states of the running sequence, early-exit logits,
per-row context stores, and a tie-aware argmax.

The sequence keeps hidden states when a strategy's verifier asks for them before the prefill
(`before_prefill` sets `seq.keep_hidden_states`); `hidden_states[l]` is the output of decoder
layer l (0: the embeddings), the last one after the final norm, as Hugging Face returns them.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InvalidOption
from ..models.lm import LM


class KeepsHiddenStates:
    """Mixin for verifiers that read the hidden states of the loop's forwards."""

    def before_prefill(self, state: Any) -> None:
        state.seq.keep_hidden_states = True


def final_norm(lm: LM) -> torch.nn.Module:
    """The model's final normalisation layer (Llama/Qwen/Gemma: `model.model.norm`)."""
    body = getattr(lm.model, "model", None)
    norm = getattr(body, "norm", None)
    if norm is None:
        raise InvalidOption(f"{lm.name}: this strategy needs a decoder with a final norm (model.model.norm)")
    return norm


def early_exit_logits(lm: LM, hidden: torch.Tensor) -> torch.Tensor:
    """Float32 logits of an intermediate hidden state [..., H]: the final norm, then the LM head."""
    with torch.inference_mode():
        return lm.model.get_output_embeddings()(final_norm(lm)(hidden)).float()


def new_hidden(state: Any, layer: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states of the loop's last forward at one layer [B, n, H] (float32) and which of the
    n positions are real tokens [B, n] (the prefill is left-padded)."""
    hidden = state.seq.hidden_states
    if hidden is None:
        raise RuntimeError("the sequence kept no hidden states (the verifier needs before_prefill)")
    h = hidden[layer].float()
    return h, state.seq.slot_valid[:, -h.shape[1]:]


class RowContext:
    """Per-row growing tensors (hidden states of every context token), keyed by row index so that
    finished rows leaving the batch need no bookkeeping."""

    def __init__(self) -> None:
        self.rows: dict[int, torch.Tensor] = {}

    def append(self, state: Any, values: torch.Tensor, valid: torch.Tensor) -> None:
        """values [B, n, ...] for the active rows; only positions with valid[b, j] are kept."""
        for b, i in enumerate(state.active):
            new = values[b][valid[b]]
            self.rows[i] = new if i not in self.rows else torch.cat([self.rows[i], new])

    def padded(self, state: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T, ...] right-padded with zeros and a mask [B, T] of real entries."""
        rows = [self.rows[i] for i in state.active]
        width = max(len(r) for r in rows)
        out = rows[0].new_zeros((len(rows), width) + tuple(rows[0].shape[1:]))
        mask = torch.zeros(len(rows), width, dtype=torch.bool, device=out.device)
        for b, r in enumerate(rows):
            out[b, : len(r)] = r
            mask[b, : len(r)] = True
        return out, mask


def argmax_then(score: torch.Tensor, tie_break: torch.Tensor) -> torch.Tensor:
    """Per row the index with the highest score; exact ties go to the highest `tie_break`.

    Example:
        >>> argmax_then(torch.tensor([[0.0, 1.0, 1.0]]), torch.tensor([[9.0, 2.0, 3.0]])).tolist()
        [2]
    """
    best = score.max(-1, keepdim=True).values
    return tie_break.masked_fill(score != best, float("-inf")).argmax(-1)


def shaped_logits(state: Any, logits: torch.Tensor) -> torch.Tensor:
    """Float32 logits [B, V] after the constraint mask and the sampler's processors (bias,
    penalties, temperature and truncation when sampling), without greedy's reduction to a one-hot:
    what a strategy scores candidates with."""
    allowed = state.allowed()
    out = logits.float()
    if allowed is not None:
        out = out.masked_fill(~allowed.to(out.device), float("-inf"))
    history = state.history()
    for processor in state.processors:
        out = processor(out, history)
    return out


def choose(state: Any, scores: torch.Tensor, tie_break: torch.Tensor | None = None) -> torch.Tensor:
    """One token per active row from strategy scores [B, V]: the argmax when greedy (exact ties
    to the highest `tie_break`), else a draw from softmax(scores) with each row's generator."""
    if state.config.greedy:
        return scores.argmax(-1) if tie_break is None else argmax_then(scores, tie_break)
    return state.sample(scores)


def verdict(tokens: torch.Tensor) -> Any:
    """The verdict of a strategy: no drafts, this token per row."""
    from ..decoding.protocols import Verdict

    return Verdict(torch.zeros(len(tokens), dtype=torch.long), tokens, ["target"] * len(tokens))


class MixedInputs:
    """Replaces the input embedding of chosen rows' pending token by a mixture of token embeddings
    (superposed decoding's drafts, soft thinking's concept tokens) in the loop's next forward.

    The strategy is also the loop's proposer (with empty proposals): `install` runs in `propose`,
    right before the forward, and puts a forward hook on the input embedding module; `remove`
    runs in `verify`, right after it, so the hook never outlives the step. Mixtures are built with
    the embedding module itself, so scaled or quantized embeddings work unchanged.
    """

    def __init__(self) -> None:
        self.pending: dict[int, torch.Tensor] = {}  # row index -> mixed embedding [H]
        self._handle: Any = None

    def set(self, lm: LM, row: int, ids: torch.Tensor, weights: torch.Tensor) -> None:
        """Row `row`'s next input: sum_j weights[j] * embedding(ids[j])."""
        with torch.inference_mode():
            vectors = lm.model.get_input_embeddings()(ids.to(lm.device)[None])[0]  # [k, H]
        self.pending[row] = (weights.to(vectors.device, torch.float32)[:, None] * vectors.float()).sum(0)

    def install(self, state: Any) -> None:
        rows = [(b, self.pending.pop(i)) for b, i in enumerate(state.active) if i in self.pending]
        self.pending.clear()
        if not rows:
            return

        def hook(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
            output = output.clone()
            for b, vector in rows:
                output[b, -1] = vector.to(output.dtype)
            return output

        self._handle = state.lm.model.get_input_embeddings().register_forward_hook(hook)

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class EmptyProposer:
    """Proposer hooks for strategies that only need a call right before each forward."""

    def start(self, state: Any) -> None:
        pass

    def propose(self, state: Any, budget: list[int]) -> Any:
        from ..decoding.protocols import Proposal

        self.before_forward(state)
        return Proposal.empty(len(state.active), state.lm.device)

    def before_forward(self, state: Any) -> None:
        pass

    def accepted(self, state: Any, proposal: Any, verdict: Any) -> None:
        pass

    def select_rows(self, rows: list[int]) -> None:
        pass  # strategies keep their state by row index


def parts_of(strategy: Any) -> Any:
    """The Parts of a strategy object: its verifier, and its proposer, output policy and results
    when it has them (`propose`, `outputs`, `results`)."""
    from ..decoding.method import Parts

    return Parts(proposer=strategy if hasattr(strategy, "propose") else None, verifier=strategy,
                 row_policy=strategy if hasattr(strategy, "outputs") else None,
                 results=getattr(strategy, "results", None))
