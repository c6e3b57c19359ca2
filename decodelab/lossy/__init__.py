"""Lossy acceleration, labelled as such: relaxed acceptance, semantic verification, token routing,
speculative thinking, early exit. Each trades exactness for speed, flags the tokens it owes to
that trade (`lossy` record column, `out.stats.lossy_fraction`), refuses to combine with methods
that assume the exact law, and is measured against the target's exact law (`law`).

Example:
    >>> import decodelab as dl
    >>> target = dl.load("tiny-random", vocab_size=32, seed=0)
    >>> draft = dl.load("tiny-random", vocab_size=32, seed=1, num_layers=1)
    >>> out = dl.generate(target, "hello", speculative="lossy-relaxed",
    ...                   speculative_options={"draft": draft, "neighbours": 2}, max_new_tokens=8)
    >>> 0.0 <= out.stats.lossy_fraction <= 1.0
    True
"""

from .methods import LOSSY_METHODS

__all__ = ["LOSSY_METHODS"]
