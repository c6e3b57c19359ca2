"""`lossy-thinking`: a small reasoner writes; at reflection points the large model takes over.

Paper: Yang et al. (2025), "Speculative Thinking: Enhancing Small-Model Reasoning with Large
Model Guidance at Inference Time". The small model writes the text; when it reaches a reflection
point (a token such as "wait", "hmm", "but", or a paragraph break) the large model writes the
next `guide_tokens` tokens, then hands back. Here the small model drafts up to k tokens per step
and they are emitted unchecked up to the first reflection token; the target's forward over them
(which also fills its cache) then gives the first guided token, and the following guide tokens
are plain target steps (the drafter proposes nothing for a row being guided).

Approximate by design: apart from the guided stretches, the output follows the small model.
More guide tokens bring the output law closer to the target's; no setting makes it exact (the
measurement in docs/benchmarks.md shows how close it gets).
"""

from __future__ import annotations

from ..decoding.loop import DecodeState
from ..decoding.protocols import Proposal
from ..models.lm import LM
from ..speculative.draft_model import DraftModel
from .verify import LossyVerifier, Outcome, Step

DEFAULT_REFLECTION = "wait,hmm,but,alternatively,\\n\\n"


def reflection_words(spec: str) -> tuple[str, ...]:
    """The comma-separated words of the `reflection` option; the two characters \\n mean a newline.

    Example:
        >>> reflection_words("Wait, hmm,\\\\n\\\\n")
        ('wait', 'hmm', '\\n\\n')
    """
    words = (w.strip().replace("\\n", "\n") for w in spec.split(","))
    return tuple(w if w.strip() == "" else w.strip().lower() for w in words if w)


class ReflectionPoints:
    """Whether a token is a reflection point: its text, stripped and lower-cased, is one of the
    words, or it contains one of the whitespace-only words (a paragraph break "\\n\\n")."""

    def __init__(self, lm: LM, words: tuple[str, ...]):
        self.lm = lm
        self.words = {w for w in words if w.strip()}
        self.breaks = [w for w in words if not w.strip()]
        self.cache: dict[int, bool] = {}

    def __call__(self, token: int) -> bool:
        if token not in self.cache:
            text = self.lm.token_text(token)
            self.cache[token] = text.strip().lower() in self.words or any(b in text for b in self.breaks)
        return self.cache[token]


class GuidedThinking(LossyVerifier):
    """Emit the drafts up to the first reflection point; then the target writes `guide_tokens`."""

    def __init__(self, reflection: ReflectionPoints, guide_tokens: int):
        super().__init__()
        self.reflection = reflection
        self.guide_tokens = int(guide_tokens)
        self.guiding: dict[int, int] = {}  # row index -> target tokens still to write

    def decide(self, state: DecodeState, step: Step) -> Outcome:
        accepted, kinds = [], []
        for b, n in enumerate(step.lengths.tolist()):
            i = state.active[b]
            if n == 0:  # a guided row (or no room to draft): the target writes
                self.guiding[i] = max(0, self.guiding.get(i, 0) - 1)
                accepted.append(0)
                kinds.append("target")
                continue
            drafts = step.drafts[b, :n].tolist()
            stop = next((j for j, t in enumerate(drafts) if self.reflection(t)), None)
            if self.guide_tokens and stop is not None and stop < n - 1:
                accepted.append(stop + 1)  # through the reflection token; the target writes the next
                kinds.append("target")
                self.guiding[i] = self.guide_tokens - 1
            else:
                accepted.append(n - 1)  # the last draft is the next token
                kinds.append("draft")
                if self.guide_tokens and stop is not None:  # the reflection token is that last draft
                    self.guiding[i] = self.guide_tokens
        return Outcome(accepted, kinds)


class ThinkingDraft(DraftModel):
    """The small reasoner: drafts nothing for rows the target is guiding."""

    def __init__(self, draft: LM, k: int, guide: GuidedThinking):
        super().__init__(draft, k=k, name="thinking")
        self.guide = guide

    def propose(self, state: DecodeState, budget: list[int]) -> Proposal:
        budget = [0 if self.guide.guiding.get(i, 0) > 0 else room for i, room in zip(state.active, budget)]
        return super().propose(state, budget)
