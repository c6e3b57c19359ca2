"""Draft-model token trees: constant branching (RSD, SpecTr, SpecInfer) or dynamic (DySpec).

The draft model expands a tree level by level, one draft forward per level over all nodes so
far (a tree forward that is discarded afterwards, so the draft's cache only ever holds accepted
text). Children of a node are drawn from the draft's processed distribution q at that node:

- ``siblings="without_replacement"``: the first m tokens of a Gumbel-top-k order, i.e. sampling
  without replacement (Jeon et al. 2024, "Recursive Speculative Decoding: Accelerating LLM
  Inference via Sampling Without Replacement"); the Gumbel noise comes from the keyed-noise
  primitive under a fresh per-step key. Verified by recursive rejection sampling.
- ``siblings="iid"``: independent draws (SpecInfer, Miao et al. 2024), verified by recursive
  rejection sampling, or with ``verifier="kseq"`` by SpecTr's k-sequential selection (Sun et
  al. 2023, "SpecTr: Fast Speculative Decoding via Optimal Transport").

Shape: ``branching=(3, 2, 1)`` gives every node of depth d branching[d] children (RSD-C; SpecTr's
k i.i.d. drafts are ``(k, 1, 1, ...)``). Without `branching` the tree is dynamic as in DySpec
(Xiong et al. 2024, "DySpec: Faster Speculative Decoding with Dynamic Token Tree Structure"):
nodes are added greedily by their priority, up to `nodes` and while above `min_value`; with
``adaptive=True`` the tree is then cut to the size that maximises expected tokens per second
under the measured t(n) (`tree_shape.best_tree_size`).

Exactness of dynamic trees. Recursive rejection treats a node's children as the first j draws of
its sibling sequence; that is exact only if the decision to stop after j draws does not look at
draw j+1. So a candidate child is ranked, kept or cut by a *predictable* priority, known before
its token is: the path probability of its parent times the draft mass its earlier siblings left
(1 - sum of their q). Ranking by the drawn token's own probability (DySpec's value) makes the
sibling count depend on the unseen draw and biases the output law (caught by
tests/test_methods_conformance.py). Priorities fall along sibling order and from parent to child,
so every cut keeps ancestors and sibling prefixes.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import torch

from ..decoding.loop import DecodeState
from ..decoding.protocols import Proposal, Verdict
from ..engine.tree import subtree_parents
from ..errors import InvalidOption
from ..models.lm import LM
from ..sampling.keyed import KeyedNoise
from .draft_model import DraftModel
from .tree_shape import MAX_TREE_NODES, best_tree_size, branching_nodes
from .tree_verifiers import tree_verifier

SIBLINGS = ("without_replacement", "iid")


class DraftTree(DraftModel):
    """Propose a token tree with a draft model that shares the target's tokenizer.

    Example:
        >>> import decodelab as dl
        >>> target = dl.load("tiny-random", vocab_size=64, seed=0)
        >>> draft = dl.load("tiny-random", vocab_size=64, seed=1)
        >>> spec = DraftTree(draft, branching=(2, 2, 1))
        >>> out = dl.generate(target, "hello", speculative=spec, max_new_tokens=8)
    """

    def __init__(self, draft: LM, *, branching: Sequence[int] | None = None, nodes: int = 16, depth: int = 6,
                 siblings: str = "without_replacement", verifier: str | None = None, adaptive: bool = False,
                 min_value: float = 0.02, name: str = "draft-tree"):
        super().__init__(draft, k=1, name=name)
        if not 0 <= float(min_value) < 1:
            raise InvalidOption(f"min_value must be in [0, 1), got {min_value}")
        if siblings not in SIBLINGS:
            raise InvalidOption(f"siblings must be one of {', '.join(SIBLINGS)}, got {siblings!r}")
        if branching is not None:
            try:  # "3,2,1" from the command line
                parts = branching.replace("x", ",").split(",") if isinstance(branching, str) else branching
                branching = tuple(int(b) for b in ([parts] if isinstance(parts, int) else parts))
            except (TypeError, ValueError):
                raise InvalidOption(f"branching must be positive integers per level, got {branching!r}") from None
            if not branching or any(b < 1 for b in branching):
                raise InvalidOption(f"branching must be positive integers per level, got {branching!r}")
            if branching_nodes(branching) > MAX_TREE_NODES:
                raise InvalidOption(f"branching {','.join(map(str, branching[:8]))}{'...' if len(branching) > 8 else ''}"
                                    f" makes a tree of more than {MAX_TREE_NODES} nodes", param="branching")
        for label, value in (("nodes", nodes), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidOption(f"{label} must be a positive integer, got {value!r}")
        if verifier == "kseq" and siblings != "iid":
            raise InvalidOption("SpecTr's k-sequential verifier needs i.i.d. siblings (siblings='iid')")
        if verifier == "without_replacement" and siblings != "without_replacement":
            raise InvalidOption("the without-replacement verifier needs siblings drawn without replacement")
        self.branching, self.nodes, self.depth, self.siblings = branching, nodes, depth, siblings
        self.verifier = tree_verifier(verifier, default=siblings)
        self.adaptive = adaptive
        self.min_value = float(min_value)
        self.curve: dict[int, float] | None = None

    def start(self, state: DecodeState) -> None:
        super().start(state)
        if self.adaptive:
            from .cost import verify_cost_curve

            self.curve = verify_cost_curve(state.lm) or None  # None: not measured here, grow to `nodes`

    # ------------------------------------------------------------------ drafting
    def propose(self, state: DecodeState, budget: list[int]) -> Proposal:
        assert self.seq is not None
        batch = len(budget)
        depth_limit = min(self.depth, min(budget), len(self.branching) if self.branching else self.depth)
        if depth_limit < 1:
            return Proposal.empty(batch, state.lm.device)
        forwards = self._feed_unfed()
        rows = [_RowTree() for _ in range(batch)]
        root_q = self._processed(state, self.last_logits)
        keys = [int(torch.randint(0, 2**62, (1,), generator=g)) for g in self.generators]
        dists: list[dict[int, torch.Tensor]] = [{-1: root_q[b]} for b in range(batch)]
        for level in range(depth_limit):
            added = [self._expand(rows[b], dists[b], level, keys[b], b) for b in range(batch)]
            if not any(added) or level + 1 == depth_limit:
                break
            logits = self._forward_tree(rows)
            forwards += 1
            q = self._processed(state, logits.reshape(-1, logits.shape[-1])).reshape(batch, -1, logits.shape[-1])
            for b, new_nodes in enumerate(added):
                for node in new_nodes:
                    dists[b][node] = q[b, node]
        for i in state.active:
            state.rows[i].stats.draft_forwards += forwards
        self.fed_drafts = 0
        return self._proposal(rows, state)

    def _processed(self, state: DecodeState, logits: torch.Tensor) -> torch.Tensor:
        # penalties see the accepted history only: exactness needs q to be the law the drafts
        # were drawn from, not any particular law
        history = state.history() if state.needs_history else None
        if history is not None and logits.shape[0] != history.seen.shape[0]:
            history = history.repeat_rows(logits.shape[0] // history.seen.shape[0])
        return state.process(logits, history).softmax(-1).float()

    def _expand(self, tree: _RowTree, dists: dict[int, torch.Tensor], level: int, key: int, b: int) -> list[int]:
        """Add this level's children; returns the new node indices."""
        new_nodes: list[int] = []
        if self.branching is not None:
            for parent in [node for node in dists if tree.depth_of(node) == level - 1]:
                for token in self._children(dists[parent], self.branching[level], key, parent, b):
                    value = tree.value(parent) * float(dists[parent][token])
                    new_nodes.append(tree.add(parent, token, dists[parent], value, value))
            return new_nodes
        # dynamic (DySpec): any node whose draft law is known may get its next child in its
        # sampling order; take candidates by value while they beat the threshold
        heap = []
        for parent, q in dists.items():
            if parent not in tree.orders:
                tree.orders[parent] = self._children(q, min(self.nodes, 8), key, parent, b)
            i = tree.child_count.get(parent, 0)
            if i < len(tree.orders[parent]):
                heapq.heappush(heap, (-self._priority(tree, q, parent, i), parent, i))
        while heap and len(tree.tokens) < self.nodes:
            neg_priority, parent, i = heapq.heappop(heap)
            if -neg_priority < self.min_value:
                break
            token = tree.orders[parent][i]
            q = dists[parent]
            new_nodes.append(tree.add(parent, token, q, tree.value(parent) * float(q[token]), -neg_priority))
            tree.child_count[parent] = i + 1
            if i + 1 < len(tree.orders[parent]):
                heapq.heappush(heap, (-self._priority(tree, q, parent, i + 1), parent, i + 1))
        return new_nodes

    def _priority(self, tree: _RowTree, q: torch.Tensor, parent: int, i: int) -> float:
        """Rank of the parent's i-th child before it is drawn: parent's path probability times the
        mass its first i children left (for i.i.d. siblings, each draw sees the whole mass)."""
        left = 1.0
        if self.siblings == "without_replacement" and i:
            left = max(0.0, 1.0 - float(q[tree.orders[parent][:i]].sum()))
        # never above the parent's or the previous sibling's priority (rounding): cuts by priority
        # must keep ancestors and sibling prefixes
        cap = tree.priorities[parent] if parent >= 0 else float("inf")
        if i:
            cap = min(cap, self._priority(tree, q, parent, i - 1))
        return min(cap, tree.value(parent) * left)

    def _children(self, q: torch.Tensor, m: int, key: int, parent: int, b: int) -> list[int]:
        """m children of a node: Gumbel-top-m (without replacement) or m independent draws."""
        if self.siblings == "without_replacement":
            m = min(m, int((q > 0).sum()))
            context = torch.tensor([parent + 1], dtype=torch.long)
            gumbel = KeyedNoise(key).gumbel(context, q.shape[-1]).to(q.device)
            scores = torch.where(q > 0, q.double().log() + gumbel, torch.full_like(gumbel, float("-inf")))
            return scores.topk(m).indices.tolist()
        return torch.multinomial(q.double(), m, replacement=True, generator=self.generators[b]).tolist()

    def _forward_tree(self, rows: list[_RowTree]) -> torch.Tensor:
        """Draft logits for every node of every row (padded rows get extra roots), discarded after."""
        assert self.seq is not None
        width = max(len(t.tokens) for t in rows)
        tokens = torch.zeros(len(rows), width, dtype=torch.long)
        parents = []
        for b, tree in enumerate(rows):
            tokens[b, : len(tree.tokens)] = torch.tensor(tree.tokens)
            parents.append(tree.parents + [-1] * (width - len(tree.tokens)))
        logits = self.seq.forward_tree(tokens.to(self.draft.device), parents)
        self.seq.keep_tree_path([[] for _ in rows])
        return logits

    def _proposal(self, rows: list[_RowTree], state: DecodeState) -> Proposal:
        batch = len(rows)
        keep = [list(range(len(t.tokens))) for t in rows]
        if self.adaptive and self.curve is not None and self.branching is None:
            ordered = [sorted(range(len(t.tokens)), key=lambda i, t=t: (-t.priorities[i], i)) for t in rows]
            width = max(len(o) for o in ordered)
            summed = [sum(rows[b].values[o[i]] for b, o in enumerate(ordered) if i < len(o)) for i in range(width)]
            n = best_tree_size(summed, self.curve, rows=batch)
            keep = [sorted(o[:n]) for o in ordered]
        width = max((len(k) for k in keep), default=0)
        if width == 0:
            return Proposal.empty(batch, state.lm.device)
        tokens = torch.zeros(batch, width, dtype=torch.long)
        parents = torch.full((batch, width), -1, dtype=torch.long)
        probs = torch.zeros(batch, width, self.draft.vocab_size, dtype=torch.float32)
        for b, (tree, nodes) in enumerate(zip(rows, keep)):
            if nodes:
                parents[b, : len(nodes)] = torch.tensor(subtree_parents(tree.parents, nodes))
            for new, old in enumerate(nodes):
                tokens[b, new] = tree.tokens[old]
                probs[b, new] = tree.dists[old].cpu()
        return Proposal(tokens, torch.tensor([len(k) for k in keep]), probs, parents)

    def accepted(self, state: DecodeState, proposal: Proposal, verdict: Verdict) -> None:
        assert self.seq is not None
        for b in range(len(self.unfed)):
            path = verdict.path(b)
            self.unfed[b].extend(proposal.tokens[b, path].tolist() if path else [])
            self.unfed[b].append(int(verdict.next_tokens[b]))


class _RowTree:
    """One row's tree under construction: tokens, parents, values, and each node's draft law."""

    def __init__(self):
        self.tokens: list[int] = []
        self.parents: list[int] = []
        self.values: list[float] = []  # path probability under the draft (the node's token included)
        self.priorities: list[float] = []  # rank known before the node's token was drawn
        self.dists: list[torch.Tensor] = []
        self.depths: list[int] = []
        self.orders: dict[int, list[int]] = {}  # node -> its children's sampling order
        self.child_count: dict[int, int] = {}

    def add(self, parent: int, token: int, dist: torch.Tensor, value: float, priority: float) -> int:
        self.tokens.append(int(token))
        self.parents.append(parent)
        self.values.append(value)
        self.priorities.append(priority)
        self.dists.append(dist)
        self.depths.append(0 if parent < 0 else self.depths[parent] + 1)
        return len(self.tokens) - 1

    def depth_of(self, node: int) -> int:
        return -1 if node < 0 else self.depths[node]

    def value(self, node: int) -> float:
        return 1.0 if node < 0 else self.values[node]
