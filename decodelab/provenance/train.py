"""Train a causal LM on texts in a known order, so that membership (and order) is known exactly.

The provenance tests are calibrated against truth that only training here can give: which texts a
model saw, and in what order (palimpsest). This is plain next-token training with AdamW on whole
texts (start token + text + EOS), in the order given, `epochs` times over; small models on CPU
train in seconds.

Example:
    >>> import decodelab as dl
    >>> lm = dl.load("tiny-random", vocab_size=80, seed=0)
    >>> losses = train_on_texts(lm, ["hello world"] * 8, epochs=2, batch_size=4)
    >>> len(losses), losses[-1] < losses[0]
    (4, True)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InvalidOption
from ..models.lm import LM
from .likelihood import encode_text, start_ids
from .texts import check_texts

MAX_EPOCHS = 1000
MAX_BATCH = 1024


def train_on_texts(lm: LM, texts: Sequence[str | Sequence[int]], *, epochs: int = 1, batch_size: int = 8, lr: float = 3e-3,
                   weight_decay: float = 0.0, seed: int = 0, progress: bool = False) -> list[float]:
    """Train `lm.model` in place on `texts`, in list order, `epochs` passes; returns each step's loss.
    An item may be a list of token ids (used as given, after the start token)."""
    if not texts:
        raise InvalidOption("training texts is empty", param="texts")
    given = [list(t) if not isinstance(t, str) else None for t in texts]
    checked = check_texts([t for t in texts if isinstance(t, str)] or ["-"], "training texts")
    if not 1 <= epochs <= MAX_EPOCHS or not 1 <= batch_size <= MAX_BATCH or not 0 < lr <= 1:
        raise InvalidOption(f"train_on_texts: epochs in [1, {MAX_EPOCHS}], batch_size in [1, {MAX_BATCH}], "
                            "lr in (0, 1]")
    start = start_ids(lm)
    eos = lm.tokenizer.eos_token_id
    strings = iter(checked)
    rows = [start + (g if g is not None else encode_text(lm, next(strings), f"training text {i}"))
            + ([eos] if eos is not None else []) for i, g in enumerate(given)]
    if any(not 0 <= t < lm.vocab_size for r in rows for t in r):
        raise InvalidOption("a training token id is outside the vocabulary", param="texts")
    if max(len(r) for r in rows) > lm.context_length:
        raise InvalidOption(f"a training text is longer than the model's context ({lm.context_length} tokens)")
    model = lm.model
    params = [p for p in model.parameters() if p.is_floating_point()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    losses = []
    steps = [(e, b) for e in range(epochs) for b in range(0, len(rows), batch_size)]
    bar = None
    if progress:
        from rich.console import Console
        from rich.progress import Progress

        bar = Progress(console=Console(stderr=True), transient=True)
        bar.start()
        task = bar.add_task("training", total=len(steps))
    model.train()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _, b in steps:
                batch = rows[b:b + batch_size]
                width = max(len(r) for r in batch)
                ids = torch.full((len(batch), width), lm.pad_token_id, dtype=torch.long)
                labels = torch.full((len(batch), width), -100, dtype=torch.long)
                mask = torch.zeros(len(batch), width, dtype=torch.long)
                for i, r in enumerate(batch):
                    ids[i, :len(r)] = torch.tensor(r)
                    labels[i, :len(r)] = torch.tensor(r)
                    mask[i, :len(r)] = 1
                out = model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                            labels=labels.to(lm.device), use_cache=False)
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                losses.append(float(out.loss.detach()))
                if bar is not None:
                    bar.advance(task)
    finally:
        model.eval()
        for p in params:
            p.requires_grad_(False)
        if bar is not None:
            bar.stop()
    return losses


__all__ = ["train_on_texts"]
