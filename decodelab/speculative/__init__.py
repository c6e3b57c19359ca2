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
from .methods import SPEC_METHODS, make
from .prompt_lookup import PromptLookup
from .token_recycling import TokenRecycling
from .tree_verifiers import TreeGreedy, TreeRejection
from .verifiers import GreedyMatch, RejectionSampling
from .vocab_trim import VocabTrim

__all__ = [
    "DraftModel", "PromptLookup", "LayerSkip", "VocabTrim", "DraftLength", "GreedyMatch", "RejectionSampling",
    "DraftTree", "TokenRecycling", "TreeGreedy", "TreeRejection",
    "make", "SPEC_METHODS", "verify_cost_curve", "derive_lm", "check_same_vocabulary",
]
