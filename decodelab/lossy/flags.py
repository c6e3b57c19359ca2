"""Which emitted tokens a lossy method owes to its relaxation: the `lossy` record column and
`out.stats.lossy_tokens` / `lossy_fraction`.

A token is flagged when the method emitted it and the exact method, with the same random draws,
would not have: a draft token that rejection sampling (the same uniform) or greedy matching would
have rejected, or a token the small model wrote that the target never checked and would have
rejected. Tokens the target wrote (bonus, correction, routed tokens) are not flagged.

Example:
    >>> flags = LossyFlags()
    >>> flags.name
    'lossy'
"""

from __future__ import annotations

from typing import Any


class LossyFlags:
    """Observer: one flag per emitted token of each row, kept in step with the row's output.

    The verifier calls `add` with the flags of the tokens a step will emit (before the loop
    appends them); tokens the loop cuts (EOS, length) are dropped when the next step adds, or
    when the output is read.
    """

    name = "lossy"

    def __init__(self) -> None:
        self.rows: dict[int, list[bool]] = {}

    def add(self, state: Any, b: int, flags: list[bool]) -> None:
        """Flags of the tokens active row b emits this step (accepted drafts, then the next token)."""
        i = state.active[b]
        done = len(state.rows[i].output_ids)
        self.rows[i] = self.rows.get(i, [])[:done] + [bool(f) for f in flags]

    def columns(self, state: Any, b: int, logprobs: Any, token: int, source: str) -> dict[str, bool]:
        i = state.active[b]
        index = len(state.rows[i].output_ids) - 1
        row = self.rows.get(i, [])
        return {"lossy": bool(row[index]) if 0 <= index < len(row) else False}

    def count(self, i: int, emitted: int) -> int:
        """Flagged tokens among the first `emitted` tokens of row i."""
        return sum(self.rows.get(i, [])[:emitted])

    def results(self, state: Any, i: int, out: Any) -> None:
        out.stats.lossy_tokens = self.count(i, len(out.token_ids))
