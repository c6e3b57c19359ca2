"""Speculative decoding: proposers (draft model, prompt lookup, layer skip, vocab trim, token
recycling, draft trees: DySpec, RSD, SpecTr), chain and tree verifiers, draft-length and
tree-size control, and the multi-draft acceptance analysis. Available as `dl.spec`.
"""

from .cost import verify_cost_curve
from .derived import derive_lm
from .draft_model import DraftModel, check_same_vocabulary
from .draft_tree import DraftTree
from .layer_skip import LayerSkip
from .length import DraftLength
from .prompt_lookup import PromptLookup
from .resolve import METHODS, make, resolve_speculative
from .token_recycling import TokenRecycling
from .tree_verifiers import TreeGreedy, TreeRejection
from .verifiers import GreedyMatch, RejectionSampling
from .vocab_trim import VocabTrim

__all__ = [
    "DraftModel", "PromptLookup", "LayerSkip", "VocabTrim", "DraftLength", "GreedyMatch", "RejectionSampling",
    "DraftTree", "TokenRecycling", "TreeGreedy", "TreeRejection",
    "make", "METHODS", "resolve_speculative", "verify_cost_curve", "derive_lm", "check_same_vocabulary",
]
