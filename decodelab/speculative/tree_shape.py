"""Tree shapes and hardware-aware tree sizing.

A draft tree is worth its expected accepted tokens per second. With a_i the probability that
node i ends up on the accepted path, one verify step yields 1 + sum_i a_i tokens (the bonus or
correction token plus the accepted drafts) and costs t(n+1), the measured time of one target
forward over n tree nodes plus the pending token (`cost.verify_cost_curve`), plus the drafting
cost. `best_tree_size` picks the n that maximises that ratio for nodes ordered by a_i, which on a
CPU is usually far smaller than the 60-80 nodes GPU papers use (Sequoia, Chen et al. 2024, makes
the same argument for hardware-aware tree sizes).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..engine.tree import depths, subtree_parents

MAX_TREE_NODES = 256  # nodes of one row's draft tree at most: bounds the verify forward's memory and time


def branching_nodes(branching: Sequence[int]) -> int:
    """Nodes of a constant tree whose level d nodes have branching[d] children each."""
    total, width = 0, 1
    for b in branching:
        width *= b
        total += width
        if total > MAX_TREE_NODES:  # stop before the product grows without bound
            break
    return total


@dataclass(frozen=True)
class TreeTemplate:
    """A static tree: parents (parents before children) and each node's rank among its siblings."""

    parents: tuple[int, ...]
    ranks: tuple[int, ...]
    priors: tuple[float, ...]  # prior acceptance estimate of each node

    def __len__(self) -> int:
        return len(self.parents)

    def prefix(self, n: int) -> TreeTemplate:
        """The first n nodes: still a tree, because parents come first."""
        return TreeTemplate(self.parents[:n], self.ranks[:n], self.priors[:n])

    def within_depth(self, limit: int) -> list[int]:
        """Indices of the nodes whose root path has at most `limit` drafts (a subtree)."""
        node_depth = depths(self.parents)
        return [i for i in range(len(self)) if node_depth[i] < limit]

    def subset(self, keep: list[int]) -> TreeTemplate:
        """The given nodes (ancestors included, in order), renumbered."""
        return TreeTemplate(tuple(subtree_parents(self.parents, keep)), tuple(self.ranks[i] for i in keep),
                            tuple(self.priors[i] for i in keep))


def best_first_template(max_nodes: int, width: int, rank_prior: Callable[[int], float] | None = None,
                        max_depth: int = 8) -> TreeTemplate:
    """The max_nodes most likely nodes of a `width`-ary tree when a rank-r child is accepted with
    probability rank_prior(r) given its parent, in best-first order (each node after its parent).

    Example:
        >>> t = best_first_template(6, width=3)
        >>> t.parents
        (-1, 0, -1, 1, 0, 2)
    """
    rank_prior = rank_prior or (lambda r: 0.6 * 0.45**r)
    parents: list[int] = []
    ranks: list[int] = []
    priors: list[float] = []
    depth: list[int] = []
    heap = [(-rank_prior(0), 0, -1, 0)]  # (-value, tie, parent, rank)
    tie = 1
    while heap and len(parents) < max_nodes:
        neg_value, _, parent, rank = heapq.heappop(heap)
        node = len(parents)
        parents.append(parent)
        ranks.append(rank)
        priors.append(-neg_value)
        depth.append(0 if parent < 0 else depth[parent] + 1)
        if rank + 1 < width:  # the next sibling
            heapq.heappush(heap, (neg_value / rank_prior(rank) * rank_prior(rank + 1), tie, parent, rank + 1))
            tie += 1
        if depth[node] + 1 < max_depth:  # the first child
            heapq.heappush(heap, (neg_value * rank_prior(0), tie, node, 0))
            tie += 1
    return TreeTemplate(tuple(parents), tuple(ranks), tuple(priors))


def interpolated_cost(curve: dict[int, float], n: int) -> float:
    """t(n) from a measured curve, linear between points and beyond the last two."""
    points = sorted(curve)
    if n <= points[0]:
        return curve[points[0]]
    for lo, hi in zip(points, points[1:]):
        if lo <= n <= hi:
            w = (n - lo) / (hi - lo)
            return (1 - w) * curve[lo] + w * curve[hi]
    last, before = points[-1], points[-2] if len(points) > 1 else points[-1]
    slope = (curve[last] - curve[before]) / max(last - before, 1)
    return curve[last] + slope * (n - last)


def best_tree_size(acceptance: Sequence[float], curve: dict[int, float], *, draft_cost: Callable[[int], float] | None = None,
                   rows: int = 1) -> int:
    """The n (0 <= n <= len(acceptance)) maximising (1 + sum a_1..a_n) / (t(n+1) + draft_cost(n)).

    `acceptance` is per-node acceptance in the order nodes would be added (already summed over
    `rows` batch rows if rows > 1, so the +1 counts once per row).

    Example:
        >>> best_tree_size([0.9, 0.5, 0.1], {1: 1.0, 2: 1.0, 4: 1.1, 8: 2.0})
        2
    """
    draft_cost = draft_cost or (lambda n: 0.0)
    best_n, best_rate, total = 0, rows / interpolated_cost(curve, 1), float(rows)
    for n, a in enumerate(acceptance, start=1):
        total += a
        rate = total / (interpolated_cost(curve, n + 1) + draft_cost(n))
        if rate > best_rate:
            best_n, best_rate = n, rate
    return best_n
