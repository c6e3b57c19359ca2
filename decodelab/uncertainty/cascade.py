"""Model cascades with token-level deferral: answer with the small model, defer to the large one
when the small model's answer looks uncertain.

Gupta, Narasimhan, Jitkrittum, Rawat, Menon & Kumar (2024), "Language Model Cascades: Token-level
uncertainty and beyond" (ICLR 2024): a sequence-level deferral score from token-level uncertainty
must summarise the tokens well; the length-normalised mean is biased by length, and *quantiles*
of the per-token uncertainties work better. Here the summary is the q-quantile of one token score
(negative log-probability by default) over the small model's answer; the answer is deferred when
the summary is above `threshold`. `threshold=inf` never defers (the small model alone),
`threshold=-inf` always does (the large model alone). The paper's learned post-hoc deferral rule
is not implemented: the threshold is the knob, swept to trace the cost/quality curve.

Example:
    >>> import decodelab as dl
    >>> small, large = dl.load("tiny-random", vocab_size=32), dl.load("tiny-random", vocab_size=32, seed=1)
    >>> out = dl.cascade(small, large, [1, 5, 6], threshold=float("inf"), max_new_tokens=3, temperature=0)
    >>> out.results["cascade"]["deferred"]
    False
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..decoding.generate import generate, is_batch
from ..decoding.records import GenerationOutput
from ..errors import InvalidOption
from ..models.lm import LM, Prompt
from .score import summary_quantile

# token uncertainty: higher means less sure
UNCERTAINTIES = {
    "nll": lambda r: -r.logprob,
    "entropy": lambda r: r.entropy,
    "one_minus_max_prob": lambda r: 1.0 - math.exp(r.top[0][2]) if r.top else 1.0 - math.exp(r.logprob),
}


@dataclass
class CascadeDecision:
    summary: float
    deferred: bool


def deferral_summary(out: GenerationOutput, uncertainty: str, quantile: float) -> float:
    """The q-quantile of the token uncertainties of an answer (nan for an empty answer)."""
    fn = UNCERTAINTIES[uncertainty]
    return summary_quantile([fn(r) for r in out.records], quantile)


def decide(summary: float, threshold: float) -> bool:
    """Defer when the summary is above the threshold; -inf always defers, +inf never."""
    if threshold == -math.inf:
        return True
    if threshold == math.inf:
        return False
    return math.isnan(summary) or summary > threshold


def _check(threshold: Any, quantile: Any, uncertainty: Any) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or math.isnan(threshold):
        raise InvalidOption(f"threshold must be a number (inf: small model alone, -inf: large alone), got {threshold!r}")
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 <= quantile <= 1:
        raise InvalidOption(f"quantile must be a number in [0, 1], got {quantile!r}")
    if uncertainty not in UNCERTAINTIES:
        raise InvalidOption(f"uncertainty must be one of {', '.join(UNCERTAINTIES)}, got {uncertainty!r}")


def cascade(small: LM, large: LM, prompt: Prompt | list[Prompt], *, threshold: float, quantile: float = 0.8,
            uncertainty: str = "nll", **generate_options: Any) -> GenerationOutput | list[GenerationOutput]:
    """Answer with `small`; re-answer with `large` the prompts whose token-uncertainty summary is
    above `threshold`. Options go to both `dl.generate` calls. Each output's
    `results["cascade"]` says: deferred, summary, threshold, the small model's text.
    """
    if not isinstance(small, LM) or not isinstance(large, LM):
        raise InvalidOption("cascade takes two models from decodelab.load()")
    _check(threshold, quantile, uncertainty)
    if generate_options.get("records") is False:
        raise InvalidOption("a cascade needs per-token records (records=False)")
    batch = is_batch(prompt)
    prompts = list(prompt) if batch else [prompt]
    first = generate(small, prompts, **generate_options)
    decisions = []
    for out in first:
        summary = deferral_summary(out, uncertainty, quantile)
        decisions.append(CascadeDecision(summary, decide(summary, threshold)))
    deferred = [i for i, d in enumerate(decisions) if d.deferred]
    second = generate(large, [prompts[i] for i in deferred], **generate_options) if deferred else []
    final = list(first)
    for i, out in zip(deferred, second):
        final[i] = out
    for out, small_out, d in zip(final, first, decisions):
        out.results["cascade"] = {"deferred": d.deferred, "summary": None if math.isnan(d.summary) else d.summary,
                                  "threshold": threshold, "quantile": quantile, "uncertainty": uncertainty,
                                  "small_text": small_out.text, "model": large.name if d.deferred else small.name}
    return final if batch else final[0]


__all__ = ["cascade", "deferral_summary", "decide", "UNCERTAINTIES"]
