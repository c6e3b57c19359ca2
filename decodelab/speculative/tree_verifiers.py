"""Verifiers for token trees: accept one root-to-leaf path so that the output law is the target's.

A node's children are alternative drafts for the same position. Verification walks down from
the root: at each node it decides whether one of the children is accepted (then continues below
it) or emits a token drawn from what is left of the target distribution.

- `TreeGreedy`: follow the child equal to the target's processed argmax.
- `TreeRejection`: recursive rejection sampling over the siblings of each node. With p the
  processed target at the node and sibling drafts x_1..x_m, draft x_i is accepted with
  probability min(1, p_i(x_i) / q_i(x_i)); after a rejection p_{i+1} = norm(max(0, p_i - q_i)); if
  every sibling is rejected the token is drawn from the last residual. q_i is the law x_i was
  drawn from *given the earlier siblings*:
  * ``siblings="iid"``: siblings drawn independently from q (SpecInfer's multi-step speculative
    sampling; Miao et al. 2024, "SpecInfer: Accelerating Large Language Model Serving with
    Tree-based Speculative Inference and Verification"), q_i = q;
  * ``siblings="without_replacement"``: siblings drawn without replacement (Gumbel-top-k), q_i = q
    with x_1..x_{i-1} removed and renormalised (Jeon et al. 2024, "Recursive Speculative Decoding:
    Accelerating LLM Inference via Sampling Without Replacement");
  * deterministic drafts (no `draft_probs`, e.g. token recycling): q_i = one-hot(x_i), so x_i is
    accepted with probability p_i(x_i) and removed from the residual otherwise.
  * ``siblings="kseq"``: SpecTr's k-sequential selection for i.i.d. siblings (Sun et al. 2023,
    "SpecTr: Fast Speculative Decoding via Optimal Transport"): accept x_i with probability
    min(1, p(x_i) / (rho q(x_i))) for the rho that keeps the all-rejected residual non-negative.
  Each rule is exact at every node, and children were drafted conditionally on their path, so
  the emitted text follows the processed target law exactly.
"""

from __future__ import annotations

import torch

from ..decoding.loop import DecodeState
from ..decoding.protocols import Proposal, Verdict
from ..errors import InvalidOption
from ..sampling.config import sample_from_probs
from .multidraft_math import spectr_residual, spectr_rho
from .verifiers import RejectionSampling, processed_target

SIBLING_MODES = ("iid", "without_replacement", "kseq")


def valid_children(proposal: Proposal, b: int) -> dict[int, list[int]]:
    """Children of each node of row b's tree (key -1: the roots), valid nodes only."""
    parents = proposal.row_parents(b)
    kids: dict[int, list[int]] = {}
    for node in range(int(proposal.lengths[b])):
        kids.setdefault(parents[node], []).append(node)
    return kids


class TreeGreedy:
    """Accept the path greedy decoding would have produced; emit the argmax after it."""

    def verify(self, state: DecodeState, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        choice = processed_target(state, target_logits, proposal).argmax(-1).cpu()  # [B, n+1]
        tokens = proposal.tokens.cpu()
        paths, next_tokens, sources = [], [], []
        for b in range(tokens.shape[0]):
            kids = valid_children(proposal, b)
            node, path = -1, []
            while True:
                wanted = int(choice[b, node + 1])
                match = [c for c in kids.get(node, []) if int(tokens[b, c]) == wanted]
                if not match:
                    break
                node = match[0]
                path.append(node)
            paths.append(path)
            next_tokens.append(int(choice[b, node + 1]))
            sources.append(_source(proposal, b, path, kids))
        return Verdict(torch.tensor([len(p) for p in paths]), torch.tensor(next_tokens), sources, paths)


class TreeRejection:
    """Recursive rejection sampling over sibling drafts (see the module docstring).

    Example:
        >>> verifier = TreeRejection(siblings="without_replacement")
    """

    def __init__(self, siblings: str = "without_replacement"):
        if siblings not in SIBLING_MODES:
            raise InvalidOption(f"siblings must be one of {', '.join(SIBLING_MODES)}, got {siblings!r}")
        self.siblings = siblings

    residual = staticmethod(RejectionSampling.residual)

    def verify(self, state: DecodeState, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        if state.config.greedy:
            return TreeGreedy().verify(state, target_logits, proposal)
        p_all = processed_target(state, target_logits, proposal).softmax(-1).double()
        q_all = proposal.draft_probs.to(p_all.device).double() if proposal.draft_probs is not None else None
        tokens = proposal.tokens.to(p_all.device)
        paths, next_tokens, sources = [], [], []
        for b, row in enumerate(state.active):
            generator = state.generators[row]
            kids = valid_children(proposal, b)
            node, path = -1, []
            while True:
                p = p_all[b, node + 1]
                siblings = kids.get(node, [])
                if not siblings:
                    break
                chosen, p = self._choose_child(p, tokens[b], q_all[b] if q_all is not None else None, siblings,
                                               generator)
                if chosen is None:
                    break
                node = chosen
                path.append(node)
            uniform = torch.rand((1,), dtype=torch.float64, generator=generator)
            next_tokens.append(int(sample_from_probs(p[None], uniform)[0]))
            paths.append(path)
            sources.append(_source(proposal, b, path, kids))
        return Verdict(torch.tensor([len(p) for p in paths]), torch.tensor(next_tokens), sources, paths)

    def _choose_child(self, p: torch.Tensor, tokens: torch.Tensor, q_row: torch.Tensor | None,
                      siblings: list[int], generator: torch.Generator) -> tuple[int | None, torch.Tensor]:
        """(accepted child or None, the distribution to draw from if none was accepted)."""
        if q_row is not None and self.siblings == "kseq":
            return self._kseq(p, tokens, q_row, siblings, generator)
        removed = torch.zeros_like(p, dtype=torch.bool)
        for child in siblings:
            x = int(tokens[child])
            if q_row is None:
                q = torch.zeros_like(p)
                q[x] = 1.0
            else:
                q = q_row[child]
                if self.siblings == "without_replacement":
                    q = q.masked_fill(removed, 0.0)
                    q = q / q.sum().clamp_min(1e-300)
            ratio = float(p[x] / q[x]) if float(q[x]) > 0 else 0.0
            if float(torch.rand((), dtype=torch.float64, generator=generator)) < min(1.0, ratio):
                return child, p
            p = self.residual(p, q)
            removed[x] = True
        return None, p

    def _kseq(self, p: torch.Tensor, tokens: torch.Tensor, q_row: torch.Tensor, siblings: list[int],
              generator: torch.Generator) -> tuple[int | None, torch.Tensor]:
        q = q_row[siblings[0]]  # i.i.d. siblings share their parent's draft law
        n = len(siblings)
        rho = spectr_rho(p, q, n)
        for child in siblings:
            x = int(tokens[child])
            ratio = float(p[x] / (rho * q[x])) if float(q[x]) > 0 else 0.0
            if float(torch.rand((), dtype=torch.float64, generator=generator)) < min(1.0, ratio):
                return child, p
        return None, spectr_residual(p, q, n, rho)


def tree_verifier(name: str | None, default: str = "without_replacement"):
    """A tree verifier by name: "greedy" or a sibling rule of `TreeRejection`."""
    name = name or default
    if name == "greedy":
        return TreeGreedy()
    if name == "rejection":
        return TreeRejection(default)
    return TreeRejection(name)


def _source(proposal: Proposal, b: int, path: list[int], kids: dict[int, list[int]]) -> str:
    if int(proposal.lengths[b]) == 0:
        return "target"
    last = path[-1] if path else -1
    return "bonus" if not kids.get(last) else "correction"
