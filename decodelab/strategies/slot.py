"""The `strategy` slot: decoding strategies that choose each token by their own rule.

Selected with `strategy=NAME` and `strategy_options={...}` in Python, `--strategy NAME
--strategy-option KEY=VALUE` on the CLI, and the `strategy` / `strategy_options` fields of the
server's request body. Each strategy module registers one `Method` in this slot.
"""

from __future__ import annotations

from ..decoding.method import Capabilities, Slot, register_slot

STRATEGY = register_slot(Slot("strategy", "decoding strategies: a scoring rule chooses each token",
                              selector="strategy", options_keyword="strategy_options"))

# A strategy supplies the verifier (it chooses the token), so it cannot sit beside a speculative
# method or a watermark (which supply theirs) nor a row policy; grammar masks apply before it.
WITH_CONSTRAINTS = Capabilities(lossless=False, composes_with=frozenset({"constraint"}))
ALONE = Capabilities(lossless=False, composes_with=frozenset())
