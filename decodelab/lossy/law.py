"""The exact output law of a lossy method on a tiny model, by enumeration, and its distance to the target's.

For a few generated tokens of a small-vocabulary model, every way a method can run is enumerated:
each draft chain the drafter can propose (with its probability), each accept/reject outcome of
the verifier (with its probability, from the same acceptance rule the method uses) and each next
token. Deterministic decisions (routing by confidence, reflection points, the judge's verdict)
are computed by the method's own pieces (its built proposer and verifier), so the law is the
method's, step structure included (draft budget, early stop of drafting, EOS). Branches whose
probability falls below `min_mass` are dropped; their total is returned as the error bound.

`total_variation` and `kl_divergence` compare the result with `target_law` (plain sampling).
The law is checked against the real generation loop by chi-square tests in tests/lossy/.

Example:
    >>> import decodelab as dl
    >>> target = dl.load("tiny-random", vocab_size=8, seed=0, init_std=0.25, num_layers=2)
    >>> draft = dl.load("tiny-random", vocab_size=8, seed=3, init_std=0.25, num_layers=1)
    >>> law, dropped = output_law(target, [1, 5, 6], 2, "lossy-relaxed", {"draft": draft, "neighbours": 0})
    >>> round(total_variation(law, target_law(target, [1, 5, 6], 2)), 9)
    0.0
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..decoding.method import BuildContext, get_method
from ..models.lm import LM
from ..sampling.config import SamplingConfig, process_logits
from ..sampling.processors import TokenHistory
from .early_exit import EarlyExitDraft, exit_depth
from .judge import JudgedAcceptance
from .relaxed import RelaxedAcceptance
from .route import ConfidentDrafts
from .thinking import GuidedThinking

Law = dict[tuple[int, ...], float]


class NextLaws:
    """Processed next-token laws (float64 NumPy) of models after a context, cached."""

    def __init__(self, config: SamplingConfig):
        self.config = config
        self.cache: dict[tuple[int, tuple[int, ...], int], np.ndarray] = {}
        self.verdicts: dict[tuple, float] = {}  # judge verdicts (P(yes)) by text and span
        self.models: dict[int, LM] = {}  # keeps every model of a key alive, so that its id is never reused

    @torch.inference_mode()
    def __call__(self, lm: LM, prompt: list[int], prefix: tuple[int, ...]) -> np.ndarray:
        key = (id(lm), tuple(prompt) + prefix, len(prompt))
        if key not in self.cache:
            self.models[id(lm)] = lm
            logits = lm.model(torch.tensor([list(prompt) + list(prefix)], device=lm.device)).logits[:, -1].float()
            history = TokenHistory.from_ids([list(prompt)], [list(prefix)], lm.vocab_size, lm.device)
            probs = process_logits(logits, self.config, history).softmax(-1)[0]
            self.cache[key] = probs.double().cpu().numpy()
        return self.cache[key]


def _residual(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    r = np.clip(p - q, 0, None)
    return r / r.sum() if r.sum() > 0 else p


def target_law(lm: LM, prompt: list[int], length: int, *, min_mass: float = 0.0, laws: NextLaws | None = None,
               **sampler: Any) -> Law:
    """P(continuation) under plain sampling with these sampler options (temperature, top_k, ...):
    `length` tokens, or fewer ending in EOS."""
    laws = laws or NextLaws(SamplingConfig(**sampler))
    out: Law = {}

    def walk(prefix: tuple[int, ...], mass: float) -> None:
        if len(prefix) == length or (prefix and prefix[-1] in lm.eos_token_ids):
            out[prefix] = out.get(prefix, 0.0) + mass
            return
        p = laws(lm, prompt, prefix)
        for t in np.nonzero(p * mass > min_mass)[0]:
            walk(prefix + (int(t),), mass * float(p[t]))

    walk((), 1.0)
    return out


class _Enumerator:
    """Walks the steps of one built lossy (or exact draft) method; see the module docstring."""

    def __init__(self, target: LM, prompt: list[int], length: int, proposer: Any, verifier: Any, laws: NextLaws,
                 min_mass: float):
        self.target, self.prompt, self.length = target, list(prompt), length
        self.proposer, self.verifier, self.laws, self.min_mass = proposer, verifier, laws, min_mass
        self.law: Law = {}
        self.dropped = 0.0

    def p(self, prefix: tuple[int, ...]) -> np.ndarray:
        return self.laws(self.target, self.prompt, prefix)

    def drafter(self, out: tuple[int, ...]) -> LM:
        if isinstance(self.proposer, EarlyExitDraft):
            return self.proposer._exit(exit_depth(len(out), self.length, self.proposer.max_layers,
                                                  self.proposer.min_layers))
        return self.proposer.draft

    def chains(self, out: tuple[int, ...], n_max: int, mass: float) -> Iterator[tuple[tuple[int, ...], list, float]]:
        """(drafts, their draft laws, probability) for every chain the drafter proposes."""
        draft, threshold = self.drafter(out), getattr(self.proposer, "threshold", None)

        def grow(chain: tuple[int, ...], qs: list, prob: float):
            if len(chain) == n_max:
                yield chain, qs, prob
                return
            q = self.laws(draft, self.prompt, out + chain)
            if threshold is not None and chain and q.max() < threshold:
                yield chain, qs, prob
                return
            for t in np.nonzero(q)[0].tolist():
                if prob * mass * q[t] > self.min_mass:
                    yield from grow(chain + (t,), qs + [q], prob * float(q[t]))
                else:
                    self.dropped += prob * mass * float(q[t])

        yield from grow((), [], 1.0)

    def outcomes(self, out: tuple[int, ...], d: tuple[int, ...], qs: list, extra: int):
        """(emitted prefix, law of the next token or None when the prefix ends with it, probability, extra)."""
        n = len(d)
        ps = [self.p(out + d[:j]) for j in range(n + 1)]
        v = self.verifier
        if isinstance(v, ConfidentDrafts):
            a = 0
            while a < n and qs[a].max() > v.min_confidence:
                a += 1
            return [(d, None, 1.0, extra)] if a == n else [(d[:a], ps[a], 1.0, extra)]
        if isinstance(v, GuidedThinking):
            stop = next((j for j, t in enumerate(d) if v.reflection(t)), None)
            if v.guide_tokens and stop is not None and stop < n - 1:
                return [(d[:stop + 1], ps[stop + 1], 1.0, v.guide_tokens - 1)]
            return [(d, None, 1.0, v.guide_tokens if v.guide_tokens and stop is not None else 0)]
        if isinstance(v, RelaxedAcceptance):
            ids, member = v.groups(torch.tensor(list(d)))
            masses = [float(ps[j][ids[j][member[j]].numpy()].sum()) for j in range(n)]
        else:  # exact acceptance (the lossless reference, and the judge's first test)
            masses = [float(ps[j][t]) for j, t in enumerate(d)]
        alphas = [min(1.0, masses[j] / qs[j][t]) if qs[j][t] > 0 else 0.0 for j, t in enumerate(d)]
        result, reach = [], 1.0
        for a in range(n + 1):
            if a == n:
                result.append((d, ps[n], reach, extra))
                break
            reject = reach * (1 - alphas[a])
            if reject > 0:
                span = list(d[a:])
                if isinstance(v, JudgedAcceptance) and v.threshold < 1 and len(span) <= v.max_span \
                        and extra < v.max_calls:
                    context = self.prompt + list(out)
                    self.laws.models[id(v.judge.lm)] = v.judge.lm
                    key = ("judge", id(v.judge.lm), v.judge.context_tokens, tuple(context), tuple(span))
                    if key not in self.laws.verdicts:  # P(yes) does not depend on the threshold: shared by a sweep
                        self.laws.verdicts[key] = v.judge.yes_probability(context, span)
                    kept = self.laws.verdicts[key] > v.threshold
                    result.append((d, ps[n], reject, extra + 1) if kept else
                                  (d[:a], _residual(ps[a], qs[a]), reject, extra + 1))
                else:
                    result.append((d[:a], _residual(ps[a], qs[a]), reject, extra))
            reach *= alphas[a]
        return result

    def emit(self, out: tuple[int, ...], tokens: tuple[int, ...], mass: float, extra: int) -> None:
        eos = self.target.eos_token_ids
        for j, t in enumerate(tokens):
            if t in eos:
                self.law[out + tokens[:j + 1]] = self.law.get(out + tokens[:j + 1], 0.0) + mass
                return
        self.walk(out + tokens, mass, extra)

    def walk(self, out: tuple[int, ...], mass: float, extra: int) -> None:
        left = self.length - len(out)
        if left <= 0:
            self.law[out] = self.law.get(out, 0.0) + mass
            return
        guided = isinstance(self.verifier, GuidedThinking) and extra > 0
        n_max = 0 if guided else min(self.proposer.k, left - 1)
        if n_max == 0:
            p = self.p(out)
            after = max(0, extra - 1) if isinstance(self.verifier, GuidedThinking) else extra
            for t in np.nonzero(p)[0].tolist():
                if mass * p[t] > self.min_mass:
                    self.emit(out, (t,), mass * float(p[t]), after)
                else:
                    self.dropped += mass * float(p[t])
            return
        for d, qs, prob in self.chains(out, n_max, mass):
            for prefix, next_law, weight, new_extra in self.outcomes(out, d, qs, extra):
                m = mass * prob * weight
                if next_law is None:
                    self.emit(out, prefix, m, new_extra)
                    continue
                for t in np.nonzero(next_law)[0].tolist():
                    if m * next_law[t] > self.min_mass:
                        self.emit(out, prefix + (t,), m * float(next_law[t]), new_extra)
                    else:
                        self.dropped += m * float(next_law[t])


def output_law(target: LM, prompt: list[int], length: int, method: str, options: dict[str, Any], *,
               min_mass: float = 1e-12, laws: NextLaws | None = None, **sampler: Any) -> tuple[Law, float]:
    """The exact law of `length` generated tokens (fewer when EOS ends them) under a lossy method,
    or under the exact `draft` method (the lossless reference), with these sampler options; and the
    probability mass dropped. `laws` (a cache) must have been made with the same sampler options."""
    config = laws.config if laws is not None else SamplingConfig(**sampler)
    m = get_method("speculative", method)
    parts = m.build(BuildContext(target, config, 1), m.check(dict(options)))
    if method == "draft" and parts.verifier.__class__.__name__ != "RejectionSampling":
        raise ValueError("the lossless reference is the draft method with rejection sampling")
    walker = _Enumerator(target, prompt, length, parts.proposer, parts.verifier, laws or NextLaws(config), min_mass)
    walker.walk((), 1.0, 0)
    return walker.law, walker.dropped


def total_variation(a: Law, b: Law) -> float:
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))


def sequence_probability(lm: LM, prompt: list[int], sequence: tuple[int, ...], laws: NextLaws) -> float:
    """The target's exact probability of one continuation under `laws`' sampler (no pruning)."""
    mass = 1.0
    for i, token in enumerate(sequence):
        mass *= float(laws(lm, prompt, tuple(sequence[:i]))[token])
        if mass == 0.0:
            break
    return mass


def kl_to_target(law: Law, lm: LM, prompt: list[int], laws: NextLaws) -> float:
    """KL(law || target) in nats, with the target's probability of every sequence of `law` computed
    exactly (`sequence_probability`), so that branches a pruned `target_law` dropped do not make it
    infinite. Infinite only when `law` puts mass where the target's sampler has none (top-k, top-p)."""
    total = 0.0
    for sequence, pa in law.items():
        if pa <= 0:
            continue
        pb = sequence_probability(lm, prompt, sequence, laws)
        if pb <= 0:
            return math.inf
        total += pa * math.log(pa / pb)
    return max(0.0, total)


def kl_divergence(a: Law, b: Law) -> float:
    """KL(a || b) in nats: what taking a's samples for b's costs (inf if a leaves b's support)."""
    total = 0.0
    for k, pa in a.items():
        if pa <= 0:
            continue
        pb = b.get(k, 0.0)
        if pb <= 0:
            return math.inf
        total += pa * math.log(pa / pb)
    return max(0.0, total)
