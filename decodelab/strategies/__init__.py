"""Decoding strategies, each a registered method of the `strategy` slot.

`dl.generate(lm, prompt, strategy=NAME, strategy_options={...})`, `--strategy NAME
--strategy-option K=V` on the CLI, `strategy` / `strategy_options` in the server's body.

Example:
    >>> import decodelab as dl
    >>> lm = dl.load("tiny-random", vocab_size=64)
    >>> out = dl.generate(lm, "hello", strategy="contrastive", max_new_tokens=4)
"""

from __future__ import annotations

from . import adadec, cautious, contrastive, dola, gumbel, icn, knn, momentum, soft_thinking, superposed, uscd  # noqa: F401  (register their methods)
from .contrastive import ContrastiveSearch
from .counterfactual import counterfactual, posterior_noise
from .dola import DoLa
from .gumbel import GumbelMax

__all__ = ["ContrastiveSearch", "DoLa", "GumbelMax", "counterfactual", "posterior_noise"]
