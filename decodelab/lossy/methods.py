"""The lossy methods as registered `Method`s in the `speculative` slot, flagged `lossy`.

Selected like any speculative method (`speculative="lossy-relaxed"`, `speculative_options={...}`;
CLI `--spec lossy-relaxed --draft NAME --spec-option KEY=VALUE`; the server's `speculative`
fields). None is a default. Each is lossless=False and lossy=True: `compose` refuses them beside
a method that assumes the model's exact law (watermarks), every emitted token carries a `lossy`
record column, and `out.stats.lossy_tokens` / `lossy_fraction` count the tokens the exact method
would not have produced. They combine with nothing else (a grammar's mask would not bind the
tokens they emit unchecked). Papers: see each module's docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..decoding.method import BuildContext, Capabilities, Method, Parts, register
from ..errors import InvalidOption
from ..models.lm import LM
from ..sampling.options import option
from ..speculative.draft_model import DraftModel, check_same_vocabulary
from ..speculative.methods import DRAFT_HELP, MAX_K
from .early_exit import EarlyExitDraft
from .judge import JudgedAcceptance, TargetJudge
from .relaxed import NeighbourGroups, RelaxedAcceptance
from .route import ConfidentDrafts
from .thinking import DEFAULT_REFLECTION, GuidedThinking, ReflectionPoints, ThinkingDraft, reflection_words
from .verify import LossyVerifier

LOSSY = Capabilities(lossless=False, lossy=True, batchable=False, composes_with=frozenset())
K_HELP = "draft tokens per step at most"


def _draft(ctx: BuildContext, value: Any, method: str) -> LM:
    if value is None:
        raise InvalidOption(f"speculative method '{method}' needs a draft model (--draft NAME / draft=...)")
    draft = ctx.model(value, "draft")
    check_same_vocabulary(ctx.lm, draft)
    return draft


def _stop_below(confidence: float) -> float | None:
    """DraftModel's threshold: stop drafting once the draft is unsure (its tokens would be routed)."""
    return confidence if 0 < confidence < 1 else None


def _parts(proposer: Any, verifier: LossyVerifier, extra_results: Any = None) -> Parts:
    results = verifier.flags.results
    if extra_results is not None:
        def results(state: Any, i: int, out: Any, first=verifier.flags.results, second=extra_results) -> None:
            first(state, i, out)
            second(state, i, out)
    return Parts(proposer=proposer, verifier=verifier, observers=[verifier.flags], results=results)


@dataclass
class RelaxedOptions:
    draft: Any = option(None, DRAFT_HELP, cli=False)
    k: int = option(5, K_HELP, ge=1, le=MAX_K)
    neighbours: int = option(4, "nearest tokens (input-embedding cosine) that count with the draft token; 0 = exact",
                             ge=0, le=64)
    min_similarity: float = option(-1.0, "neighbours must be at least this cosine-similar", ge=-1, le=1)


def _build_relaxed(ctx: BuildContext, o: RelaxedOptions) -> Parts:
    draft = _draft(ctx, o.draft, "lossy-relaxed")
    verifier = RelaxedAcceptance(NeighbourGroups(ctx.lm, o.neighbours, o.min_similarity))
    return _parts(DraftModel(draft, k=o.k), verifier)


@dataclass
class JudgeOptions:
    draft: Any = option(None, DRAFT_HELP, cli=False)
    k: int = option(5, K_HELP, ge=1, le=MAX_K)
    threshold: float = option(0.5, "keep a rejected span when the target's P(yes) exceeds this; 1 = exact", ge=0, le=1)
    max_judge_calls: int = option(8, "judge prompts per row at most (each is a target prefill)", ge=0, le=256)
    max_span: int = option(8, "longest rejected span the judge is asked about", ge=1, le=MAX_K)
    context_tokens: int = option(256, "tokens of the text the judge sees", ge=1, le=4096)


def _build_judge(ctx: BuildContext, o: JudgeOptions) -> Parts:
    draft = _draft(ctx, o.draft, "lossy-judge")
    verifier = JudgedAcceptance(TargetJudge(ctx.lm, o.context_tokens), o.threshold, o.max_judge_calls, o.max_span)
    return _parts(DraftModel(draft, k=o.k), verifier, verifier.results)


@dataclass
class RouteOptions:
    draft: Any = option(None, DRAFT_HELP, cli=False)
    k: int = option(5, K_HELP, ge=1, le=MAX_K)
    min_confidence: float = option(0.9, "the small model writes a token when its top probability exceeds this; "
                                   "1 = every token to the target (exact)", ge=0, le=1)


def _build_route(ctx: BuildContext, o: RouteOptions) -> Parts:
    draft = _draft(ctx, o.draft, "lossy-route")
    return _parts(DraftModel(draft, k=o.k, threshold=_stop_below(o.min_confidence)), ConfidentDrafts(o.min_confidence))


@dataclass
class ThinkingOptions:
    draft: Any = option(None, DRAFT_HELP, cli=False)
    k: int = option(5, K_HELP, ge=1, le=MAX_K)
    guide_tokens: int = option(16, "tokens the target writes after each reflection point", ge=0, le=256)
    reflection: str = option(DEFAULT_REFLECTION, "comma-separated reflection words (\\n = newline)", max_length=1000)


def _build_thinking(ctx: BuildContext, o: ThinkingOptions) -> Parts:
    draft = _draft(ctx, o.draft, "lossy-thinking")
    words = reflection_words(o.reflection)
    if not words:
        raise InvalidOption("lossy-thinking: reflection must name at least one word")
    verifier = GuidedThinking(ReflectionPoints(ctx.lm, words), o.guide_tokens)
    return _parts(ThinkingDraft(draft, o.k, verifier), verifier)


@dataclass
class EarlyExitOptions:
    max_layers: int | None = option(None, "exit depth of the first token (default: 3/4 of the target's)", ge=1,
                                    le=1024)
    min_layers: int | None = option(None, "exit depth at max_new_tokens (default: 1/4 of the target's)", ge=1,
                                    le=1024)
    k: int = option(4, K_HELP, ge=1, le=MAX_K)
    min_confidence: float = option(0.5, "an exit writes a token when its top probability exceeds this; "
                                   "1 = every token from the full model (exact)", ge=0, le=1)


def _build_early_exit(ctx: BuildContext, o: EarlyExitOptions) -> Parts:
    depth = ctx.lm.num_layers
    high = o.max_layers if o.max_layers is not None else max(1, depth * 3 // 4)
    low = o.min_layers if o.min_layers is not None else min(high, max(1, depth // 4))
    draft = EarlyExitDraft(ctx.lm, high, low, o.k)
    draft.threshold = _stop_below(o.min_confidence)
    return _parts(draft, ConfidentDrafts(o.min_confidence))


LOSSY_METHODS = [
    Method("lossy-relaxed", "speculative", "LOSSY relaxed acceptance: the target's mass on the draft token's "
           "embedding neighbours", "Park et al. 2025, LANTERN; So et al. 2025, Grouped Speculative Decoding",
           RelaxedOptions, _build_relaxed, LOSSY, example={"draft": "draft", "k": 3, "neighbours": 2}),
    Method("lossy-judge", "speculative", "LOSSY semantic verification: the target, prompted, may keep a rejected span",
           "Think Before You Accept: Semantic Reflective Verification (2025); Bachmann et al. 2025, Judge Decoding",
           JudgeOptions, _build_judge, LOSSY, example={"draft": "draft", "k": 3, "max_judge_calls": 2}),
    Method("lossy-route", "speculative", "LOSSY token routing: the small model writes, the target takes unsure tokens",
           "Fu et al. 2025, R2R: Small-Large Model Token Routing", RouteOptions, _build_route, LOSSY,
           example={"draft": "draft", "k": 3, "min_confidence": 0.2}),
    Method("lossy-thinking", "speculative", "LOSSY speculative thinking: the target writes after reflection points",
           "Yang et al. 2025, Speculative Thinking", ThinkingOptions, _build_thinking, LOSSY,
           example={"draft": "draft", "k": 3, "guide_tokens": 2, "reflection": "e,a"}),
    Method("lossy-early-exit", "speculative", "LOSSY early exit: shallow exits of the target write confident tokens, "
           "exit depth falling with position", "Del Corro et al. 2023, SkipDecode", EarlyExitOptions,
           _build_early_exit, LOSSY, example={"max_layers": 1, "min_layers": 1, "k": 3}),
]
for _method in LOSSY_METHODS:
    register(_method)
