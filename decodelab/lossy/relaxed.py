"""`lossy-relaxed`: accept a draft token when the target's mass on its neighbourhood is high enough.

Papers: Park et al. (2025), "LANTERN: Accelerating Visual Autoregressive Models with Relaxed
Speculative Decoding" (ICLR 2025), and "Grouped Speculative Decoding for Autoregressive Image
Generation" (So et al., ICCV 2025). Both observe that the target often spreads its mass over
tokens that are close in latent space, so exact speculative sampling rejects drafts the target
would find interchangeable. LANTERN replaces p(x) in the acceptance ratio by the target's mass on
a latent-proximity neighbourhood A(x) of the draft token: accept x ~ q with probability
min(1, p(A(x)) / q(x)); a rejection draws from the usual residual norm(max(0, p - q)).

Here A(x) is x plus its `neighbours` nearest tokens by cosine similarity of the target's input
embeddings (only those at least `min_similarity` similar). Greedy decoding accepts x when the
target's argmax lies in A(x) (GSD's group test). Exactness: with neighbours=0, A(x) = {x} and this
is speculative sampling (exact); every neighbour added moves the output law towards the draft's.
Our own code; no reference code copied.
"""

from __future__ import annotations

import weakref

import torch

from ..decoding.loop import DecodeState
from ..models.lm import LM
from .verify import LossyVerifier, Outcome, Step


class NeighbourGroups:
    """A(x) for draft tokens x: x and its nearest tokens in the target's input-embedding space.

    The unit-normalised embedding table is built once per model (float32 for float32 models,
    bfloat16 otherwise: a 152k x 1536 table is 0.47 GB then) and shared by every generation; a
    token's neighbourhood is computed the first time it is drafted and kept.

    Example:
        >>> import decodelab as dl
        >>> groups = NeighbourGroups(dl.load("tiny-random", vocab_size=32), neighbours=2)
        >>> ids, ok = groups(torch.tensor([[5]]))
        >>> ids.shape, bool(ok[0, 0, 0])   # the token itself comes first
        (torch.Size([1, 1, 3]), True)
    """

    def __init__(self, lm: LM, neighbours: int, min_similarity: float = -1.0):
        self.unit = unit_embeddings(lm)  # [V, H]
        self.neighbours = min(int(neighbours), lm.vocab_size - 1)
        self.min_similarity = float(min_similarity)
        vocab = self.unit.shape[0]
        # per token: its group ids and similarities, filled on first use (known[t] says which)
        self.known = torch.zeros(vocab, dtype=torch.bool)
        self.ids = torch.zeros(vocab, self.neighbours + 1, dtype=torch.long)
        self.sims = torch.zeros(vocab, self.neighbours + 1, dtype=torch.float32)

    def __call__(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Group ids [..., m+1] (the token first) and which of them are in the group (bool)."""
        flat = tokens.reshape(-1).cpu()
        missing = flat[~self.known[flat]].unique()
        if len(missing):
            sims = (self.unit[missing.to(self.unit.device)] @ self.unit.T).float()
            sims[torch.arange(len(missing)), missing] = float("inf")  # the token itself always belongs, first
            values, ids = sims.topk(self.neighbours + 1, dim=-1)
            self.ids[missing], self.sims[missing] = ids.cpu(), values.cpu()
            self.known[missing] = True
        shape = (*tokens.shape, self.neighbours + 1)
        ids, ok = self.ids[flat], self.sims[flat] >= self.min_similarity
        return ids.reshape(shape).to(tokens.device), ok.reshape(shape).to(tokens.device)


_UNIT_EMBEDDINGS: dict[int, torch.Tensor] = {}


def unit_embeddings(lm: LM) -> torch.Tensor:
    """The model's input embeddings, each row scaled to unit length; cached while the model lives.

    Example:
        >>> import decodelab as dl
        >>> unit = unit_embeddings(dl.load("tiny-random", vocab_size=32))
        >>> unit.shape, bool(torch.allclose(unit[1:].norm(dim=-1), torch.ones(31)))  # row 0: padding, zero
        (torch.Size([32, 64]), True)
    """
    key = id(lm.model)
    if key not in _UNIT_EMBEDDINGS:
        embed = lm.model.get_input_embeddings()
        vocab = embed.num_embeddings
        probe = embed(torch.zeros(1, dtype=torch.long, device=lm.device))
        dtype = torch.float32 if probe.dtype == torch.float32 else torch.bfloat16
        unit = torch.empty(vocab, probe.shape[-1], dtype=dtype, device=lm.device)
        with torch.inference_mode():
            # through the embedding's own lookup, in row chunks: packed tables dequantise only the
            # rows asked for (their `.weight` would multiply the whole table by an identity)
            for start in range(0, vocab, 8192):
                rows = embed(torch.arange(start, min(start + 8192, vocab), device=lm.device)).float()
                unit[start:start + 8192] = (rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)).to(dtype)
        _UNIT_EMBEDDINGS[key] = unit
        weakref.finalize(lm.model, _UNIT_EMBEDDINGS.pop, key, None)
    return _UNIT_EMBEDDINGS[key]


class RelaxedAcceptance(LossyVerifier):
    """LANTERN-style relaxed acceptance over embedding neighbourhoods (see module docstring)."""

    def __init__(self, groups: NeighbourGroups):
        super().__init__()
        self.groups = groups

    def relaxed_ok(self, step: Step) -> torch.Tensor:
        """[B, k] bool: the relaxed rule accepts d_j (valid drafts only)."""
        k = step.width
        ids, member = self.groups(step.drafts)  # [B, k, m+1]
        ids = ids.to(step.p.device)
        member = member.to(step.p.device)
        valid = torch.arange(k, device=step.p.device)[None] < step.lengths[:, None]
        if step.greedy:
            top = step.p[:, :k].argmax(-1, keepdim=True)
            return ((ids == top) & member).any(-1) & valid
        mass = (step.p[:, :k].gather(-1, ids) * member).sum(-1)
        q_draft = step.q.gather(-1, step.drafts[..., None]).squeeze(-1)
        ratio = torch.where(q_draft > 0, mass / q_draft.clamp_min(1e-30), torch.zeros_like(mass)).clamp(max=1)
        return (step.uniforms[:, :k] < ratio.double()) & valid

    def decide(self, state: DecodeState, step: Step) -> Outcome:
        ok = self.relaxed_ok(step) if step.width else step.exact_ok
        accepted = ok.long().cumprod(1).sum(1).tolist() if step.width else [0] * step.p.shape[0]
        kinds = ["residual" if a < int(n) else "target" for a, n in zip(accepted, step.lengths.tolist())]
        return Outcome(accepted, kinds)
