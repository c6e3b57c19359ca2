"""Speculative decoding: proposers (draft model, prompt lookup, layer skip, vocab trim),
verifiers (greedy match, rejection sampling) and draft-length control. Available as `dl.spec`.
"""

from .cost import verify_cost_curve
from .derived import derive_lm
from .draft_model import DraftModel, check_same_vocabulary
from .layer_skip import LayerSkip
from .length import DraftLength
from .prompt_lookup import PromptLookup
from .resolve import METHODS, make, resolve_speculative
from .verifiers import GreedyMatch, RejectionSampling
from .vocab_trim import VocabTrim

__all__ = [
    "DraftModel", "PromptLookup", "LayerSkip", "VocabTrim", "DraftLength", "GreedyMatch", "RejectionSampling",
    "make", "METHODS", "resolve_speculative", "verify_cost_curve", "derive_lm", "check_same_vocabulary",
]
