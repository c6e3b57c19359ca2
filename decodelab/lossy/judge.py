"""`lossy-judge`: keep a rejected draft span when the target, asked, judges it acceptable.

Paper: "Think Before You Accept: Semantic Reflective Verification for Faster Speculative
Decoding" (2025), which prompts the target model itself to reflect on whether a draft that fails
the exact test is still correct, instead of training a judge head (Bachmann et al. 2025, "Judge
Decoding"). Each step runs exact speculative sampling; when it rejects draft j, the target is
asked, in a separate prompt (through its chat template for chat models), whether drafts j..k are
a correct continuation of the text that means what it would have written; if its probability of
"yes" (against "no") exceeds `threshold`, the whole span is kept and the target adds its bonus
token after it. We do not generate the target's own alternative span to compare with (that would
cost a decoding run per call); the judge sees the text and the span.

Cost is bounded: at most `max_judge_calls` judge prompts per row, only for spans of at most
`max_span` tokens, with the last `context_tokens` tokens of the text. Exactness: threshold=1
(or max_judge_calls=0) never keeps a rejected span: exact speculative sampling.
"""

from __future__ import annotations

from typing import Any

import torch

from ..decoding.loop import DecodeState
from ..engine.sequence import Sequence
from ..errors import InvalidOption
from ..models.lm import LM
from .verify import LossyVerifier, Outcome, Step

QUESTION = ("Here is the beginning of a text:\n\n{context}\n\nProposed continuation:\n\n{span}\n\nIs the proposed "
            "continuation correct, and does it say what the text should say next? Answer yes or no.")


def answer_ids(lm: LM, words: tuple[str, ...]) -> list[int]:
    """First token ids of the spellings of an answer word."""
    return sorted({int(lm.tokenizer(w, add_special_tokens=False)["input_ids"][0]) for w in words})


class TargetJudge:
    """The target model judging a span, by its next-token odds of "yes" against "no".

    Example:
        >>> import decodelab as dl
        >>> judge = TargetJudge(dl.load("tiny-random", vocab_size=64), context_tokens=16)
        >>> 0.0 <= judge.yes_probability([1, 5, 6], [7, 8]) <= 1.0
        True
    """

    CACHE_SIZE = 4096  # verdicts kept (a verdict is a function of the text and the span)

    def __init__(self, lm: LM, context_tokens: int = 256):
        self.lm = lm
        self.context_tokens = int(context_tokens)
        self.cache: dict[tuple[tuple[int, ...], tuple[int, ...]], float] = {}
        yes, no = answer_ids(lm, ("yes", "Yes", "YES")), answer_ids(lm, ("no", "No", "NO"))
        unk = getattr(lm.tokenizer, "unk_token_id", None)
        shared = set(yes) & set(no) | {unk}
        self.yes = [t for t in yes if t not in shared]
        self.no = [t for t in no if t not in shared]
        if not self.yes or not self.no:
            raise InvalidOption(f"lossy-judge needs tokens for 'yes' and 'no' in {lm.name}'s vocabulary")

    def prompt(self, context: list[int], span: list[int]) -> list[int]:
        text = QUESTION.format(context=self.lm.decode(context[-self.context_tokens:]), span=self.lm.decode(span))
        if self.lm.chat:
            return self.lm.apply_chat_template([{"role": "user", "content": text}])
        return self.lm.encode(text + "\nAnswer:", chat=False)

    def yes_probability(self, context: list[int], span: list[int]) -> float:
        """P(yes) / (P(yes) + P(no)) for the judge prompt's first answer token."""
        key = (tuple(context[-self.context_tokens:]), tuple(span))
        if key not in self.cache:
            if len(self.cache) >= self.CACHE_SIZE:
                self.cache.pop(next(iter(self.cache)))
            self.cache[key] = self._ask(list(key[0]), span)
        return self.cache[key]

    @torch.inference_mode()
    def _ask(self, context: list[int], span: list[int]) -> float:
        logits = Sequence(self.lm, [self.prompt(context, span)]).prefill()[0].float()
        probs = logits.softmax(-1)
        yes, no = float(probs[self.yes].sum()), float(probs[self.no].sum())
        return yes / (yes + no) if yes + no > 0 else 0.0


class JudgedAcceptance(LossyVerifier):
    """Exact speculative sampling, then the judge may keep a rejected span (module docstring)."""

    def __init__(self, judge: Any, threshold: float, max_judge_calls: int, max_span: int):
        super().__init__()
        self.judge = judge
        self.threshold, self.max_calls, self.max_span = float(threshold), int(max_judge_calls), int(max_span)
        self.calls: dict[int, int] = {}
        self.kept: dict[int, int] = {}

    def keeps(self, context: list[int], span: list[int]) -> bool:
        """The judge's decision for a rejected span (deterministic in context and span)."""
        return self.judge.yes_probability(context, span) > self.threshold

    def decide(self, state: DecodeState, step: Step) -> Outcome:
        batch = step.p.shape[0]
        if not step.width:
            return Outcome([0] * batch, ["target"] * batch)
        exact = step.exact_ok.long().cumprod(1).sum(1).tolist()
        accepted, kinds = [], []
        for b, (a, n) in enumerate(zip(exact, step.lengths.tolist())):
            i = state.active[b]
            span = step.drafts[b, a:n].tolist()
            if a < n and self.threshold < 1 and len(span) <= self.max_span and self.calls.get(i, 0) < self.max_calls:
                self.calls[i] = self.calls.get(i, 0) + 1
                if self.keeps(state.context(b), span):
                    self.kept[i] = self.kept.get(i, 0) + 1
                    a = n
            accepted.append(a)
            kinds.append("residual" if a < n else "target")
        return Outcome(accepted, kinds)

    def results(self, state: DecodeState, i: int, out: Any) -> None:
        out.results["lossy-judge"] = {"judge_calls": self.calls.get(i, 0), "spans_kept": self.kept.get(i, 0)}
