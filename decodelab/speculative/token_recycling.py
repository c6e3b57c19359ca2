"""Token Recycling: draft trees from the candidate tokens earlier forwards produced and discarded.

Luo et al. (2024), "Turning Trash into Treasure: Accelerating Inference of Large Language
Models with Token Recycling". An adjacency matrix M [V, w] holds, for each token t, the top-w
tokens the target predicted after t the last time t was forwarded; every target forward
(verification included) overwrites the rows of the tokens it saw. A draft tree is read out of
M breadth-first along a static template: node i gets M[token(parent(i)), rank(i)], the root's
parent being the last token of the text. No draft model and no training.

The paper verifies greedily; here sampling is exact too: the tree's drafts are deterministic,
so the tree verifier's recursive rejection treats each sibling as a point mass (accept x with
probability p(x), otherwise remove it from p and try the next sibling).

Tree size: the paper uses a fixed ~80-node template tuned for a GPU. Here the template is
best-first by per-node acceptance, which is estimated online (accepted / proposed per template
node, with a prior), and each step verifies the prefix of the template that maximises expected
tokens per second under this machine's measured t(n) (`tree_shape.best_tree_size`).
The adjacency matrix persists on the object, so reusing one `TokenRecycling` across calls keeps
what earlier texts taught it (the paper's "hot start").
"""

from __future__ import annotations

import torch

from ..decoding.loop import DecodeState
from ..decoding.protocols import Proposal, Verdict
from ..errors import InvalidOption
from ..models.lm import LM
from .tree_shape import TreeTemplate, best_first_template, best_tree_size
from .tree_verifiers import tree_verifier


class TokenRecycling:
    """Draft-free token trees from an adjacency matrix of recycled candidate tokens.

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> spec = TokenRecycling(lm, nodes=16)
        >>> out = dl.generate(lm, "abcabc", speculative=spec, max_new_tokens=8, temperature=0)
    """

    def __init__(self, target: LM, *, width: int = 8, nodes: int = 32, adaptive: bool = True,
                 prior_weight: float = 4.0, max_depth: int = 8, verifier: str | None = None,
                 forgetting: float = 0.97, probe_every: int = 8):
        for name, value in (("width", width), ("nodes", nodes), ("max_depth", max_depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidOption(f"{name} must be a positive integer, got {value!r}")
        if width > target.vocab_size:
            raise InvalidOption(f"width {width} exceeds the vocabulary ({target.vocab_size})")
        self.target, self.width, self.adaptive = target, width, adaptive
        # drafts are deterministic: rejection treats each sibling as a point mass
        self.verifier = tree_verifier(verifier)
        self.template: TreeTemplate = best_first_template(nodes, width, max_depth=max_depth)
        # candidates start as the lowest token ids; the first forwards overwrite what they see
        self.adjacency = torch.arange(width, device=target.device).repeat(target.vocab_size, 1)
        # tokens whose candidates came from a real forward (the others hold placeholders)
        self.known = torch.zeros(target.vocab_size, dtype=torch.bool, device=target.device)
        self.proposed = torch.zeros(len(self.template), dtype=torch.float64)
        self.accepted_counts = torch.zeros(len(self.template), dtype=torch.float64)
        self.prior_weight = prior_weight
        self.curve: dict[int, float] | None = None
        self.nodes: list[int] = []
        self.informative: torch.Tensor | None = None
        if not 0 < forgetting <= 1:
            raise InvalidOption(f"forgetting must be in (0, 1], got {forgetting}")
        self.forgetting, self.probe_every, self.idle = forgetting, max(1, int(probe_every)), 0

    # --- proposer protocol
    def start(self, state: DecodeState) -> None:
        if state.lm.vocab_size != self.target.vocab_size:
            raise InvalidOption("TokenRecycling was built for a model with another vocabulary size")
        if self.adaptive and self.curve is None:
            from .cost import verify_cost_curve

            self.curve = verify_cost_curve(state.lm) or None  # None: not measured here, use the whole template

    def node_acceptance(self) -> torch.Tensor:
        """Estimated probability that each template node is on the accepted path."""
        prior = torch.tensor(self.template.priors, dtype=torch.float64)
        return (self.accepted_counts + self.prior_weight * prior) / (self.proposed + self.prior_weight)

    def choose_size(self, rows: int) -> int:
        if not self.adaptive or self.curve is None:
            return len(self.template)
        rates = (self.node_acceptance() * rows).tolist()
        size = best_tree_size(rates, self.curve, rows=rows)
        if size == 0:
            # not drafting teaches nothing, and the matrix improves as text goes by: probe now and then
            self.idle += 1
            if self.idle >= self.probe_every:
                self.idle = 0
                return min(4, len(self.template))
        return size

    def propose(self, state: DecodeState, budget: list[int]) -> Proposal:
        batch = len(state.active)
        n = min(self.choose_size(batch), len(self.template))
        # a node at depth d puts d+1 drafts on its path: keep the nodes every row has room for
        self.nodes = self.template.prefix(n).within_depth(min(budget))
        template = self.template.subset(self.nodes)
        n = len(template)
        if n == 0:
            return Proposal.empty(batch, state.lm.device)
        device = self.adjacency.device
        roots = torch.tensor([state.context(b)[-1] for b in range(batch)], device=device)
        tokens = torch.zeros(batch, n, dtype=torch.long, device=device)
        informative = torch.zeros(batch, n, dtype=torch.bool, device=device)
        for i, (parent, rank) in enumerate(zip(template.parents, template.ranks)):
            source = roots if parent < 0 else tokens[:, parent]
            tokens[:, i] = self.adjacency[source, rank]
            informative[:, i] = self.known[source] & (True if parent < 0 else informative[:, parent])
        self.informative = informative.cpu()
        parents = torch.tensor(template.parents, dtype=torch.long).repeat(batch, 1)
        return Proposal(tokens.cpu(), torch.full((batch,), n, dtype=torch.long), None, parents)

    def accepted(self, state: DecodeState, proposal: Proposal, verdict: Verdict) -> None:
        if state.forwarded is not None:
            self.recycle(*state.forwarded)
        if proposal.width and self.informative is not None:
            # only nodes read from real candidates say how good the template is
            self.proposed *= self.forgetting
            self.accepted_counts *= self.forgetting
            self.proposed[self.nodes] += self.informative.sum(0).double()
            for b in range(len(state.active)):
                for node in verdict.path(b):
                    if bool(self.informative[b, node]):
                        self.accepted_counts[self.nodes[node]] += 1

    def recycle(self, tokens: torch.Tensor, logits: torch.Tensor) -> None:
        """Overwrite M[t] with the top-w tokens predicted after each forwarded token t."""
        top = logits.reshape(-1, logits.shape[-1]).topk(self.width, -1).indices
        index = tokens.reshape(-1).to(self.adjacency.device)
        self.adjacency[index] = top.to(self.adjacency.device)
        self.known[index] = True

    def select_rows(self, rows: list[int]) -> None:
        pass
