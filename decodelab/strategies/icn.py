"""In-context navigation (ICN) for diverse candidates (Peng, Wang, Yao & Shang 2025, "Correlation
and Navigation in the Vocabulary Key Representation Space of Language Models", ICLR).

Next-token candidates cluster in the model's key space: asking again yields near copies of the
first answer. ICN puts the earlier candidates into the context and asks for another one, which
steers the query away from the keys already explored. Here each row writes `candidates` answers
one after the other in one run: when an answer ends (EOS, or a newline with
`end_at_newline`), the strategy writes `navigation` (e.g. "Another, different answer:") instead
of stopping, and the next answer is decoded with every earlier one in view. Each step decodes as
usual (greedy or sampled); the answers are in `out.results["icn"]["candidates"]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..decoding.method import BuildContext, Method, Parts, register
from ..decoding.protocols import Proposal, Verdict
from ..sampling.options import option
from .common import choose, parts_of, shaped_logits, verdict
from .slot import ALONE


class InContextNavigation:
    """Verifier of ICN (see the module docstring).

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> out = dl.generate(lm, "hello", strategy="icn", strategy_options={"candidates": 2}, max_new_tokens=8)
        >>> len(out.results["icn"]["candidates"]) <= 2
        True
    """

    def __init__(self, candidates: int, navigation: list[int], end_at_newline: bool):
        self.n = candidates
        self.navigation = navigation
        self.end_at_newline = end_at_newline
        self.spans: dict[int, list[list[int]]] = {}  # row -> [start, end) of each answer in its output
        self.writing: dict[int, list[int]] = {}  # row -> navigation tokens still to write

    def _ends(self, lm: Any, token: int) -> bool:
        return token in lm.eos_token_ids or (self.end_at_newline and "\n" in lm.token_text(token))

    def verify(self, state: Any, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        tokens = choose(state, shaped_logits(state, target_logits[:, 0]))
        for b, i in enumerate(state.active):
            done = len(state.rows[i].output_ids)
            spans = self.spans.setdefault(i, [[0, None]])
            if self.writing.get(i):
                tokens[b] = self.writing[i].pop(0)
                if not self.writing[i]:
                    spans.append([done + 1, None])
                continue
            token = int(tokens[b])
            if not self._ends(state.lm, token):
                continue
            spans[-1][1] = done
            if len(spans) < self.n:
                self.writing[i] = list(self.navigation)
                if token in state.lm.eos_token_ids:  # the answer ends here: write the navigation instead
                    tokens[b] = self.writing[i].pop(0)
                    if not self.writing[i]:
                        spans.append([done + 1, None])
            elif token not in state.lm.eos_token_ids:
                tokens[b] = next(iter(state.lm.eos_token_ids))  # the last answer ends the row
        return verdict(tokens)

    def results(self, state: Any, row: int, out: Any) -> None:
        ids = state.rows[row].output_ids
        spans = self.spans.get(row, [[0, None]])
        answers = [ids[s:e if e is not None else len(ids)] for s, e in spans]
        eos = state.lm.eos_token_ids
        out.results["icn"] = {"candidates": [state.lm.decode([t for t in a if t not in eos]).strip()
                                             for a in answers],
                              "spans": [[s, e if e is not None else len(ids)] for s, e in spans]}


@dataclass
class ICNOptions:
    candidates: int = option(3, "answers written one after the other", ge=1, le=32)
    navigation: str = option("\nAnother, different answer:", "text written between answers", max_length=512)
    end_at_newline: bool = option(True, "an answer also ends at a newline (else only at EOS)")


def _build(ctx: BuildContext, o: ICNOptions) -> Parts:
    from ..errors import InvalidOption

    navigation = ctx.lm.tokenizer.encode(o.navigation, add_special_tokens=False)
    if not navigation:
        raise InvalidOption("icn: navigation must encode to at least one token", param="navigation")
    return parts_of(InContextNavigation(o.candidates, navigation, o.end_at_newline))


register(Method("icn", "strategy", "in-context navigation: earlier answers in context steer the next away",
                "Peng et al. 2025, Correlation and Navigation in the Vocabulary Key Representation Space of "
                "Language Models", ICNOptions, _build, ALONE, example={"candidates": 2}))
