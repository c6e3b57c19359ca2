"""Search over whole rows, as row policies: beam search (`num_beams=`) and best-of-n (`best_of=`).

Example:
    >>> import decodelab as dl
    >>> lm = dl.load("tiny-random", vocab_size=64)
    >>> out = dl.generate(lm, "hello", num_beams=2, max_new_tokens=4)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..decoding.method import BuildContext, Capabilities, Method, Parts, Slot, register, register_slot
from ..sampling.options import option
from .beam import BeamSearch
from .best_of import BestOf

MAX_ROWS_PER_PROMPT = 64


@dataclass
class BeamOptions:
    num_beams: int = option(1, "beam search with this many beams (1: off)", ge=1, le=MAX_ROWS_PER_PROMPT)
    length_penalty: float = option(1.0, "beam search: hypotheses scored by sum logprob / length ** this", ge=-10,
                                   le=10)
    early_stopping: bool = option(False, "beam search: stop as soon as num_beams hypotheses ended")


@dataclass
class BestOfOptions:
    best_of: int = option(1, "sample this many completions and return the most likely per token (1: off)", ge=1,
                          le=MAX_ROWS_PER_PROMPT)


def _build_beam(ctx: BuildContext, o: BeamOptions) -> Parts:
    search = BeamSearch(o.num_beams, o.length_penalty, o.early_stopping)
    return Parts(verifier=search, row_policy=search)


def _build_best_of(ctx: BuildContext, o: BestOfOptions) -> Parts:
    return Parts(row_policy=BestOf(o.best_of))


register_slot(Slot("policy", "row policies: several rows per prompt, reordered or chosen between", flat=True,
                   requires="num_beams > 1 or best_of > 1"))
register(Method("beam", "policy", "beam search (Hugging Face's num_beams semantics)",
                "Wu et al. 2016, Google's Neural Machine Translation System (length normalisation)", BeamOptions,
                _build_beam, Capabilities(lossless=False, streams=False),
                selects=lambda v: (v.get("num_beams") or 1) > 1, example={"num_beams": 2},
                rows_option="num_beams", rows_per_prompt=lambda o: o.num_beams))
register(Method("best-of", "policy", "best-of-n: n samples, the highest mean log-probability returned",
                "OpenAI completions API, best_of", BestOfOptions, _build_best_of,
                Capabilities(lossless=False, needs_sampling=True, streams=False, composes_with=frozenset({"constraint"})),
                selects=lambda v: (v.get("best_of") or 1) > 1, example={"best_of": 2},
                rows_option="best_of", rows_per_prompt=lambda o: o.best_of))

__all__ = ["BeamSearch", "BestOf", "BeamOptions", "BestOfOptions"]
