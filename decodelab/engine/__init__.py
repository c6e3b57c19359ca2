"""The engine: token ids plus KV cache, chain and tree forwards, rollback."""

from .sequence import Sequence
from .tree import ancestor_mask, children_of, depths, path_to

__all__ = ["Sequence", "ancestor_mask", "children_of", "depths", "path_to"]
