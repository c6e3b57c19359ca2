"""Locally constrained decoding: mask the tokens a grammar forbids, then sample.

The baseline of every constrained-generation system (Willard & Louf, 2023, "Efficient Guided
Generation for Large Language Models"; llguidance, 2024-2025). At each step the model's
logits outside the grammar's allowed set are set to -inf before temperature / top-k / top-p,
so the sampled law is the *locally* renormalised one, p(x_t | x_<t, x_t allowed) — exact for
that law, but not the global conditional p(x | x in L) (see `awrs`/`smc` for that).

It plugs into the loop's `Constraint` hook, so it works with every sampler and every
speculative method: masks are computed along the drafts (llguidance consumes the drafts,
fills one mask per position and rolls back), and a draft the grammar forbids has target
probability 0 and is rejected.

End of text. EOS is allowed exactly when the text so far is a complete member of the language.
A grammar that is complete but can still be extended (regex `a+` after "a") leaves the choice
to the model: it may sample EOS or continue. A grammar that can no longer be extended ends the
row at once (finish_reason "stop"; no EOS is emitted or scored).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from .grammar import Grammar, fill_masks, masks_to_bool

if TYPE_CHECKING:
    from ..decoding.loop import DecodeState


class GrammarConstraint:
    """The loop's `Constraint` for llguidance grammars: one matcher per active row.

    `grammars` holds one compiled grammar per prompt of the batch (they differ only when token
    healing gives rows different prefixes), or one grammar for all rows.

    Example:
        >>> import decodelab as dl
        >>> from decodelab.constrain import compile_grammar, GrammarConstraint
        >>> lm = dl.load("tiny-random", vocab_size=16)
        >>> c = GrammarConstraint(compile_grammar(lm, regex="(ea|to)"))
        >>> dl.generate(lm, [1, 4], max_new_tokens=4, temperature=1.0, seed=0, constraint=c).text in ("ea", "to")
        True
    """

    def __init__(self, grammars: Grammar | list[Grammar]):
        self.grammars = grammars
        self.matchers: list[Any] = []
        self.rows: list[int] = []  # active index -> prompt row index
        # per prompt row: set by the loop's hooks, read by generate()
        self.satisfied: dict[int, bool] = {}
        self.failed: dict[int, str] = {}
        self.seconds: dict[int, float] = {}
        self.checks: dict[int, int] = {}
        self.log_weight: dict[int, float] = {}
        self.pending: dict[int, tuple[float, int]] = {}  # AWRS: (log weight, checks) of the next token

    def grammar(self, row: int) -> Grammar:
        return self.grammars[row] if isinstance(self.grammars, list) else self.grammars

    # ------------------------------------------------------------ Constraint protocol
    def start(self, state: DecodeState) -> None:
        if isinstance(self.grammars, list) and len(self.grammars) != len(state.rows):
            # one grammar per prompt; a row policy gives each prompt several rows
            self.grammars = [self.grammars[g] for g in state.groups]
        self.rows = list(state.active)
        self.matchers = [self.grammar(i).matcher() for i in self.rows]
        for i in self.rows:
            self.satisfied[i] = False
            self.seconds[i] = 0.0
            self.checks.setdefault(i, 0)
            self.log_weight.setdefault(i, 0.0)

    def allowed(self, state: DecodeState, tokens: torch.Tensor | None, parents: torch.Tensor | None,
                ) -> torch.Tensor:
        t0 = time.perf_counter()
        k = 0 if tokens is None else int(tokens.shape[1])
        rows = len(self.matchers) * (k + 1)
        g = self.grammar(self.rows[0])
        if parents is None or k == 0:
            drafts = [[] for _ in self.matchers] if k == 0 else tokens.tolist()
            bitmask = fill_masks([(m, b * (k + 1), d) for b, (m, d) in enumerate(zip(self.matchers, drafts))],
                                 rows, g)
        else:
            bitmask = self._tree_masks(tokens, parents, rows, g)
        mask = masks_to_bool(bitmask, g, state.lm.device)
        self._charge(time.perf_counter() - t0)
        return mask

    def advance(self, state: DecodeState, b: int, token: int) -> bool:
        t0 = time.perf_counter()
        i = self.rows[b]
        matcher = self.matchers[b]
        if i in self.pending:
            log_w, checks = self.pending.pop(i)
            self.log_weight[i] += log_w
            self.checks[i] += checks
            row = state.rows[i]
            if row.records and len(row.records) == len(row.output_ids):
                row.records[-1].extra.update(log_weight=log_w, constraint_checks=float(checks))
        if i in self.failed:
            done = True
        elif token in state.lm.eos_token_ids:
            # EOS is in the mask when the text is complete, and also (alone) in a dead end
            # where no token can continue the grammar: a marked failure
            self.satisfied[i] = bool(matcher.is_accepting())
            if not self.satisfied[i]:
                self.failed[i] = "no token of this model can continue the constraint"
            done = True
        elif not matcher.consume_token(int(token)):
            self.failed[i] = f"token {token} violates the constraint: {matcher.get_error()}"
            done = True
        else:
            done = bool(matcher.is_stopped())
            self.satisfied[i] = bool(matcher.is_accepting())
        self.seconds[i] += time.perf_counter() - t0
        return done

    def select_rows(self, rows: list[int]) -> None:
        seen: set[int] = set()
        matchers = []
        for r in rows:
            # a repeated row (SMC resampling) needs its own copy of the parser state
            matchers.append(self.matchers[r].deep_copy() if r in seen else self.matchers[r])
            seen.add(r)
        self.matchers = matchers
        self.rows = [self.rows[r] for r in rows]

    def reorder(self, parents: list[int]) -> None:
        """Active row b takes the parser state and counters of active row parents[b] (SMC)."""
        matchers, seen = [], set()
        for p in parents:
            matchers.append(self.matchers[p].deep_copy() if p in seen else self.matchers[p])
            seen.add(p)
        self.matchers = matchers
        for table in (self.satisfied, self.failed, self.seconds, self.checks, self.log_weight):
            old = {i: table[i] for i in self.rows if i in table}
            for b, p in enumerate(parents):
                source = self.rows[p]
                if source in old:
                    table[self.rows[b]] = old[source]
                else:
                    table.pop(self.rows[b], None)

    # ------------------------------------------------------------ helpers
    def check(self, b: int, token: int) -> bool:
        """Whether active row b may emit `token` next (one lazy check, as AWRS needs)."""
        g = self.grammar(self.rows[b])
        return token_allowed(self.matchers[b], g, token)

    def _tree_masks(self, tokens: torch.Tensor, parents: torch.Tensor, rows: int, g: Grammar) -> Any:
        """Masks for token trees: node j's mask follows its root path (consume, fill, roll back)."""
        import llguidance.numpy as lnp

        k = int(tokens.shape[1])
        bitmask = lnp.allocate_token_bitmask(rows, g.tokenizer.vocab_size)
        toks, pars = tokens.tolist(), parents.tolist()
        for b, matcher in enumerate(self.matchers):
            lnp.fill_next_token_bitmask(matcher, bitmask, b * (k + 1))
            for j in range(k):
                path, node = [], j
                while node >= 0:
                    path.append(toks[b][node])
                    node = pars[b][node]
                path.reverse()
                taken = matcher.try_consume_tokens(path)
                if taken == len(path):
                    lnp.fill_next_token_bitmask(matcher, bitmask, b * (k + 1) + j + 1)
                if taken:
                    matcher.rollback(taken)
        return bitmask

    def _charge(self, seconds: float) -> None:
        share = seconds / max(1, len(self.rows))
        for i in self.rows:
            self.seconds[i] = self.seconds.get(i, 0.0) + share


def token_allowed(matcher: Any, g: Grammar, token: int) -> bool:
    """One constraint check without a mask: may `matcher` take `token` next?"""
    if not 0 <= token < g.real_vocab:
        return False
    if token in g.eos_token_ids:
        return bool(matcher.is_accepting())
    return matcher.validate_tokens([token]) == 1
