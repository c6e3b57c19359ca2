"""Token trees as parent arrays, and the attention structure a tree forward needs.

A tree of n nodes is a list `parents` with parents[i] < i (or -1 for a child of the current
last token). Node i may attend to the cached prefix and to its ancestors and itself; its
position is the prefix length plus its depth. Chains are trees with parents = [-1, 0, 1, ...].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def validate_parents(parents: Sequence[int]) -> None:
    for i, parent in enumerate(parents):
        if not -1 <= int(parent) < i:
            raise ValueError(f"tree node {i} has parent {parent}; parents must come before children")


def ancestor_mask(parents: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    """Boolean [n, n]: entry (i, j) is True when j is i itself or one of its ancestors."""
    validate_parents(parents)
    n = len(parents)
    mask = torch.eye(n, dtype=torch.bool)
    for i, parent in enumerate(parents):
        if parent >= 0:
            mask[i] |= mask[parent]
    return mask.to(device) if device is not None else mask


def depths(parents: Sequence[int]) -> list[int]:
    """Depth of each node, 0 for children of the current last token."""
    out: list[int] = []
    for parent in parents:
        out.append(0 if parent < 0 else out[parent] + 1)
    return out


def path_to(parents: Sequence[int], node: int) -> list[int]:
    """Node indices from the root down to `node` (inclusive); [] for node == -1."""
    path = []
    while node >= 0:
        path.append(node)
        node = parents[node]
    return path[::-1]


def subtree_parents(parents: Sequence[int], keep: Sequence[int]) -> list[int]:
    """Parents of the kept nodes (each node's ancestors kept too, in order), renumbered 0..len-1."""
    new_index = {old: new for new, old in enumerate(keep)}
    return [new_index[parents[i]] if parents[i] >= 0 else -1 for i in keep]


def children_of(parents: Sequence[int]) -> dict[int, list[int]]:
    """Children of each node in order; key -1 holds the roots."""
    kids: dict[int, list[int]] = {-1: []}
    for i, parent in enumerate(parents):
        kids.setdefault(int(parent), []).append(i)
        kids.setdefault(i, [])
    return kids
