"""`Sequence`: token ids and the KV cache of one or more rows, with rollback and tree surgery.

Layout. The cache has S slots per row. `slot_valid[b, s]` says whether slot s of row b holds a
token of that row's text; left padding and rolled-back or discarded tree slots are holes. Rows
may therefore hold different numbers of tokens while sharing one cache tensor, which is what
lets speculative decoding accept different lengths per row. Each row keeps its own next
position (`next_pos`), so RoPE positions stay those of a contiguous text whatever the holes.
Trailing all-hole slots are cropped at once; a single row never keeps a hole (rollback crops,
`select_rows` down to one row squeezes holes out).

Masks. A plain forward of a batch-1 sequence without holes passes no mask (the model's causal
fast path). Otherwise chains get a 2D key mask and trees get an additive float 4D mask
[batch, 1, q, kv] with 0 / -inf (a boolean 4D mask gave wrong results with eager attention).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence as Seq

import torch

from ..errors import InvalidPrompt, PromptTooLong
from ..models.lm import LM
from .direct_forward import DirectForward
from .fast_linear import small_batch_linear
from .kv_cache import SlotCache, replace_tail
from .tree import ancestor_mask, depths, validate_parents


class Sequence:
    """Token ids and KV cache for a batch of rows.

    Example:
        >>> import decodelab as dl
        >>> from decodelab.engine import Sequence
        >>> lm = dl.load("tiny-random", vocab_size=32)
        >>> seq = Sequence(lm, [[1, 5, 6, 7]])
        >>> last = seq.prefill()              # logits after the prompt, shape [1, 32]
        >>> logits = seq.forward([[9, 10]])   # [1, 2, 32]
        >>> seq.rollback(1); seq.lengths()
        [5]
    """

    def __init__(self, lm: LM, rows: Seq[Seq[int]]):
        if not rows or any(len(r) == 0 for r in rows):
            raise InvalidPrompt("every row of a sequence needs at least one token")
        self.lm = lm
        self.device = lm.device
        self.ids: list[list[int]] = [list(map(int, r)) for r in rows]
        self.cache = SlotCache(config=lm.model.config)
        self.batch_size = len(rows)
        self.slot_valid = torch.zeros(self.batch_size, 0, dtype=torch.bool, device=self.device)
        self.next_pos = torch.zeros(self.batch_size, dtype=torch.long, device=self.device)
        self.forward_calls = 0
        # few-row forwards through `W @ x.T` (fast_linear); off where results must match
        # Hugging Face's own batched forwards bit for bit (beam search)
        self.few_row_path = True
        # methods that read hidden states (decoding strategies) set this before the prefill: each
        # forward then keeps the model's hidden states (embeddings + one per layer, the last after
        # the final norm) in `hidden_states`, each [B, n, H]
        self.keep_hidden_states = False
        self.hidden_states: tuple[torch.Tensor, ...] | None = None
        self.check_room(max(len(r) for r in rows))

    # ----------------------------------------------------------------- queries
    def lengths(self) -> list[int]:
        """Tokens held per row (ids given to forward, minus rolled-back ones)."""
        return [len(r) for r in self.ids]

    @property
    def num_slots(self) -> int:
        return int(self.slot_valid.shape[1])

    def has_holes(self) -> bool:
        return bool((~self.slot_valid).any())

    def room(self) -> int:
        """How many more tokens the longest row can take before the context is full."""
        return self.lm.context_length - int(self.next_pos.max())

    def check_room(self, n: int) -> None:
        if int(self.next_pos.max()) + n > self.lm.context_length:
            raise PromptTooLong(
                f"{int(self.next_pos.max()) + n} tokens exceed the context length of {self.lm.context_length}"
            )

    # ----------------------------------------------------------------- forward
    def prefill(self) -> torch.Tensor:
        """Forward the rows' prompts (left-padded) and return the last logits [B, V]."""
        if self.num_slots:
            raise RuntimeError("prefill() runs once, on a fresh sequence")
        width = max(len(r) for r in self.ids)
        pad = self.lm.pad_token_id
        tokens = torch.full((self.batch_size, width), pad, dtype=torch.long)
        valid = torch.zeros(self.batch_size, width, dtype=torch.bool)
        for b, row in enumerate(self.ids):
            tokens[b, width - len(row):] = torch.tensor(row)
            valid[b, width - len(row):] = True
        valid = valid.to(self.device)
        positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
        self.slot_valid = valid
        mask = None if bool(valid.all()) else valid.long()
        logits = self._run(tokens.to(self.device), positions, mask, last_only=True)
        self.next_pos = valid.sum(-1)
        return logits[:, -1]

    def forward(self, tokens: torch.Tensor | Seq[Seq[int]], *, last_only: bool = False) -> torch.Tensor:
        """Append a chain of n tokens to every row and return their logits [B, n, V]."""
        tokens = self._as_tensor(tokens)
        n = tokens.shape[1]
        self.check_room(n)
        positions = self.next_pos[:, None] + torch.arange(n, device=self.device)
        self.slot_valid = torch.cat([self.slot_valid, torch.ones_like(tokens, dtype=torch.bool)], 1)
        mask = self.slot_valid.long() if self.has_holes() else None
        logits = self._run(tokens, positions, mask, last_only=last_only)
        self.next_pos = self.next_pos + n
        for b in range(self.batch_size):
            self.ids[b].extend(tokens[b].tolist())
        return logits

    def forward_tree(self, tokens: torch.Tensor | Seq[Seq[int]], parents: Seq[int] | Seq[Seq[int]] | torch.Tensor,
                     ) -> torch.Tensor:
        """Forward a token tree per row and return logits [B, n, V].

        `parents` is one parent list shared by every row, or one list per row (all of length n,
        so rows may have trees of different shapes; pad a smaller tree with extra roots). The
        tree's slots stay in the cache until `keep_tree_path` keeps one path per row.
        """
        tokens = self._as_tensor(tokens)
        n = tokens.shape[1]
        per_row = _per_row_parents(parents, self.batch_size)
        if any(len(row) != n for row in per_row):
            raise ValueError("parents must have one entry per tree token")
        tree_depth = torch.tensor([depths(row) for row in per_row], device=self.device)
        self.check_room(int(tree_depth.max()) + 1)
        positions = self.next_pos[:, None] + tree_depth
        past = self.slot_valid[:, None, :].expand(-1, n, -1)
        shapes = {tuple(row) for row in per_row}
        if len(shapes) == 1:
            tree = ancestor_mask(per_row[0], self.device)[None].expand(self.batch_size, -1, -1)
        else:
            tree = torch.stack([ancestor_mask(row, self.device) for row in per_row])
        allowed = torch.cat([past, tree], -1)
        dtype = self.lm.dtype
        mask4d = torch.zeros(allowed.shape, dtype=dtype, device=self.device)
        mask4d.masked_fill_(~allowed, torch.finfo(dtype).min)
        self._tree = (self.num_slots, per_row, tokens)
        self.slot_valid = torch.cat([self.slot_valid, torch.ones_like(tokens, dtype=torch.bool)], 1)
        return self._run(tokens, positions, mask4d[:, None], last_only=False)

    def keep_tree_path(self, paths: Seq[Seq[int]]) -> None:
        """Keep, per row, the tree nodes on its accepted path (root first); drop the rest."""
        start, per_row, tokens = self._tree
        del self._tree
        if len(paths) != self.batch_size:
            raise ValueError("one path per row")
        keep_len = max((len(p) for p in paths), default=0)
        # Gather each row's kept tree slots to the front of the tree region; rows with
        # shorter paths get holes after theirs.
        index = torch.zeros(self.batch_size, keep_len, dtype=torch.long, device=self.device)
        valid = torch.zeros(self.batch_size, keep_len, dtype=torch.bool, device=self.device)
        for b, path in enumerate(paths):
            parents = per_row[b]
            for depth, node in enumerate(path):
                if not 0 <= node < len(parents) or parents[node] != (path[depth - 1] if depth else -1):
                    raise ValueError(f"row {b}: {list(path)} is not a root-to-node path of the tree")
            if path:
                index[b, : len(path)] = torch.tensor(list(path), device=self.device) + start
                valid[b, : len(path)] = True
            self.ids[b].extend(tokens[b, list(path)].tolist())
        self._gather_tail(start, index)
        self.slot_valid = torch.cat([self.slot_valid[:, :start], valid], 1)
        self.next_pos = self.next_pos + valid.sum(-1)
        self._crop_trailing_holes()

    def rollback(self, n: int | Seq[int] | torch.Tensor) -> None:
        """Drop the last n tokens of each row (an int for all rows, or one count per row)."""
        counts = [int(n)] * self.batch_size if isinstance(n, int) else [int(c) for c in n]
        if len(counts) != self.batch_size or any(c < 0 for c in counts):
            raise ValueError("rollback needs a non-negative count per row")
        for b, count in enumerate(counts):
            if count == 0:
                continue
            if count > len(self.ids[b]) - 1:
                raise ValueError(f"row {b}: cannot roll back {count} of {len(self.ids[b])} tokens")
            slots = self.slot_valid[b].nonzero().flatten()[-count:]
            self.slot_valid[b, slots] = False
            self.next_pos[b] -= count
            del self.ids[b][-count:]
        self._crop_trailing_holes()

    def select_rows(self, rows: Seq[int]) -> None:
        """Keep only the given rows (in this order), e.g. when other rows have finished."""
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        self.cache.batch_select_indices(index)
        self.slot_valid = self.slot_valid[index]
        self.next_pos = self.next_pos[index]
        self.ids = [list(self.ids[r]) for r in rows]  # copies: resampling may repeat a row
        self.batch_size = len(self.ids)
        if self.batch_size == 1 and self.has_holes():
            # a lone row goes back to the unmasked fast path: squeeze its holes out once
            keep = self.slot_valid[0].nonzero().flatten()[None]
            self._gather_tail(0, keep)
            self.slot_valid = torch.ones_like(keep, dtype=torch.bool)
            return
        any_valid = self.slot_valid.any(0)
        first = int(any_valid.nonzero().min()) if bool(any_valid.any()) else 0
        if first > 0:  # columns that were padding for every remaining row
            for layer in self.cache.layers:
                layer.keys = layer.keys[:, :, first:]
                layer.values = layer.values[:, :, first:]
            self.slot_valid = self.slot_valid[:, first:]

    def append_rows(self, other: Sequence) -> None:
        """Add the rows of another prefilled sequence of the same model to this batch (continuous
        batching: requests join a running batch). The cache with fewer slots is left-padded with
        holes, so every row keeps its own positions and text.

        Example:
            >>> import decodelab as dl
            >>> lm = dl.load("tiny-random", vocab_size=32)
            >>> a, b = Sequence(lm, [[1, 5, 6]]), Sequence(lm, [[1, 7]])
            >>> _ = a.prefill(); _ = b.prefill()
            >>> a.append_rows(b); a.lengths()
            [3, 2]
        """
        if other.lm.model is not self.lm.model:
            raise ValueError("rows can only join a sequence of the same model")
        width = max(self.num_slots, other.num_slots)

        def left_pad(tensor: torch.Tensor, slots: int) -> torch.Tensor:
            if not slots:
                return tensor
            shape = list(tensor.shape)
            shape[2] = slots
            return torch.cat([tensor.new_zeros(shape), tensor], 2)

        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            for name in ("keys", "values"):
                joined = torch.cat([left_pad(getattr(mine, name), width - self.num_slots),
                                    left_pad(getattr(theirs, name), width - other.num_slots)], 0)
                setattr(mine, name, joined)
        holes = [torch.zeros(n, width - s, dtype=torch.bool, device=self.device)
                 for n, s in ((self.batch_size, self.num_slots), (other.batch_size, other.num_slots))]
        self.slot_valid = torch.cat([torch.cat([holes[0], self.slot_valid], 1),
                                     torch.cat([holes[1], other.slot_valid.to(self.device)], 1)], 0)
        self.next_pos = torch.cat([self.next_pos, other.next_pos.to(self.device)])
        self.ids += [list(r) for r in other.ids]
        self.batch_size += other.batch_size

    # ----------------------------------------------------------------- internals
    def _as_tensor(self, tokens: torch.Tensor | Seq[Seq[int]]) -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor):
            tokens = torch.tensor([list(r) for r in tokens], dtype=torch.long)
        tokens = tokens.to(self.device, torch.long)
        if tokens.ndim != 2 or tokens.shape[0] != self.batch_size or tokens.shape[1] == 0:
            raise ValueError(f"tokens must have shape [{self.batch_size}, n>0], got {tuple(tokens.shape)}")
        return tokens

    def _run(self, tokens, positions, mask, *, last_only: bool) -> torch.Tensor:
        few_rows = small_batch_linear(self.lm.model) if self.few_row_path else contextlib.nullcontext()
        direct = DirectForward.of(self.lm.model) if self.few_row_path and not self.keep_hidden_states else None
        if direct is not None and direct.applies(tokens.shape[1], self.cache.get_seq_length(), self.batch_size) \
                and (self.batch_size > 1 or mask is None or mask.ndim == 4):  # one row has no holes
            with torch.inference_mode(), few_rows:
                logits = direct(tokens, positions, self.cache, mask, last_only=last_only)
            self.hidden_states = None
            self.forward_calls += 1
            return logits
        with torch.inference_mode(), few_rows:
            out = self.lm.model(
                input_ids=tokens,
                attention_mask=mask,
                position_ids=positions,
                cache=self.cache,
                use_cache=True,
                logits_to_keep=1 if last_only else 0,
                **({"output_hidden_states": True} if self.keep_hidden_states else {}),
            )
        self.hidden_states = out.hidden_states if self.keep_hidden_states else None
        self.forward_calls += 1
        return out.logits

    def _crop_trailing_holes(self) -> None:
        any_valid = self.slot_valid.any(0)
        keep = int(any_valid.nonzero().max()) + 1 if bool(any_valid.any()) else 0
        if keep < self.num_slots:
            self.cache.crop(keep - self.cache.get_seq_length())
            self.slot_valid = self.slot_valid[:, :keep]

    def _gather_tail(self, start: int, index: torch.Tensor) -> None:
        """Replace cache slots [start:] by the slots `index` [B, k] (absolute), per row."""
        for layer in self.cache.layers:
            keys, values = layer.keys, layer.values
            gather_index = index[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[3])
            replace_tail(layer, start, torch.gather(keys, 2, gather_index), torch.gather(values, 2, gather_index))


def _per_row_parents(parents, batch_size: int) -> list[list[int]]:
    """Parent lists per row from a shared list, a list of lists or a tensor [n] / [B, n]."""
    if isinstance(parents, torch.Tensor):
        parents = parents.tolist()
    parents = list(parents)
    if parents and isinstance(parents[0], (list, tuple)):
        if len(parents) != batch_size:
            raise ValueError("one parent list per row")
        rows = [[int(x) for x in row] for row in parents]
    else:
        rows = [[int(x) for x in parents]] * batch_size
    for row in rows:
        validate_parents(row)
    return rows
