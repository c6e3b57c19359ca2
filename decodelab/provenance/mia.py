"""Membership inference with p-values: was a text in the model's (fine-tuning) training data?

Statistics (higher = more member-like), each turned into a p-value against a reference set of
known non-members (`pvalues.rank_p_values`), so that P(p <= a) <= a for a candidate that is a
non-member drawn like the reference texts:

- `loss`: minus the mean token negative log-likelihood (Yeom et al. 2018, *Privacy risk in machine
  learning: analyzing the connection to overfitting*).
- `zlib`: minus the mean NLL divided by the text's zlib-compressed length in bytes (Carlini et al.
  2021, *Extracting training data from large language models*): discounts texts that are simply
  easy.
- `mink`: the mean log-probability of the text's k% least likely tokens (Shi et al. 2024,
  *Detecting pretraining data from large language models*, Min-K% Prob).
- `icp`: ICP-MIA (*In-context probing for membership inference in fine-tuned language models*,
  arXiv 2512.16292, 2025). Its signal is the *optimization gap*: after fine-tuning, a member has
  little loss left to lose, a non-member a lot. In-context probing estimates the gap without
  training: put the most similar reference ("probe") texts in the context and measure how much the
  loss drops, gap = NLL(x) - NLL(x | probes); the statistic is minus the gap. Probes are chosen by
  cosine similarity of hashed token-bigram counts (the paper uses sentence embeddings; this needs
  no extra model). The probes come from the reference set (a `probe_fraction` of it, the rest
  calibrates) or are given; the same probe pool serves candidates and calibration texts, so they
  stay exchangeable. Only the reference-data probing strategy is built, not self-perturbation.

What is exact: the p-value's validity needs only that a non-member candidate and the reference
texts are exchangeable (drawn from the same distribution, e.g. a random held-out split); it does not
depend on the model or on the statistic. The power does.

Example:
    >>> import decodelab as dl
    >>> lm = dl.load("tiny-random", vocab_size=80)
    >>> report = mia(lm, ["a candidate text"], ["one reference", "another one", "a third"])
    >>> [round(r.p_value, 2) for r in report.results]  # doctest: +SKIP
    [0.75]
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from ..models.lm import LM
from ..sampling.options import check_options, option
from .likelihood import encode_text, text_logprobs
from .pvalues import rank_p_values
from .texts import check_model, check_texts

METHODS = ("loss", "zlib", "mink", "icp")
HASH_BUCKETS = 1 << 14


@dataclass
class MiaOptions:
    """Options of `dl.provenance.mia` (also `decodelab provenance mia` flags and the server's fields)."""

    method: Literal["loss", "zlib", "mink", "icp"] = option("loss", "membership statistic")
    k: float = option(0.2, "mink: fraction of least likely tokens averaged", gt=0, le=1)
    shots: int = option(1, "icp: most similar probe texts put before the candidate", ge=1, le=16)
    probe_fraction: float = option(0.5, "icp: share of the reference set used as probes when no probes are given "
                                        "(the rest calibrates)", gt=0, lt=1)
    seed: int = option(0, "icp: seed of the reference set's split into probes and calibration", ge=0, le=2**63 - 1)


@dataclass
class MiaResult:
    """One candidate: its statistic (higher = more member-like) and p-value (small = member)."""

    index: int
    statistic: float
    p_value: float
    tokens: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MiaReport:
    """Results per candidate, with the calibration statistics they were ranked against."""

    method: str
    results: list[MiaResult]
    reference_statistics: list[float] = field(repr=False)
    probes: int = 0

    @property
    def p_values(self) -> list[float]:
        return [r.p_value for r in self.results]


def loss_statistic(logprobs: torch.Tensor, text: str) -> float:
    return float(logprobs.mean())


def zlib_statistic(logprobs: torch.Tensor, text: str) -> float:
    return float(logprobs.mean()) / len(zlib.compress(text.encode("utf-8")))


def mink_statistic(logprobs: torch.Tensor, text: str, k: float) -> float:
    n = max(1, int(round(k * logprobs.numel())))
    return float(logprobs.sort().values[:n].mean())


def _bigram_vectors(lm: LM, texts: Sequence[str]) -> torch.Tensor:
    """L2-normalised hashed token-bigram counts [n, HASH_BUCKETS] (unigrams for 1-token texts)."""
    out = torch.zeros(len(texts), HASH_BUCKETS)
    for i, text in enumerate(texts):
        ids = torch.tensor(encode_text(lm, text), dtype=torch.long)
        keys = ids[:-1] * 1_000_003 + ids[1:] if ids.numel() > 1 else ids
        out[i].index_add_(0, keys % HASH_BUCKETS, torch.ones(keys.numel()))
    return torch.nn.functional.normalize(out, dim=-1)


def icp_contexts(lm: LM, texts: Sequence[str], probes: Sequence[str], shots: int) -> list[str]:
    """For each text, its `shots` most similar probes (never the text itself), most similar last."""
    sims = _bigram_vectors(lm, texts) @ _bigram_vectors(lm, probes).T
    same = torch.tensor([[t == p for p in probes] for t in texts], dtype=torch.bool)
    sims = sims.masked_fill(same, -2.0)
    shots = min(shots, len(probes))
    top = sims.topk(shots, dim=-1).indices.flip(-1)
    return ["\n\n".join(probes[j] for j in row.tolist()) + "\n\n" for row in top]


def statistics(lm: LM, texts: Sequence[str], options: MiaOptions, probes: Sequence[str] = (),
               what: str = "text") -> tuple[list[float], list[int]]:
    """(statistic, scored tokens) of each text under `options.method`."""
    logprobs = text_logprobs(lm, texts, what=what)
    if options.method == "loss":
        return [loss_statistic(lp, t) for lp, t in zip(logprobs, texts)], [lp.numel() for lp in logprobs]
    if options.method == "zlib":
        return [zlib_statistic(lp, t) for lp, t in zip(logprobs, texts)], [lp.numel() for lp in logprobs]
    if options.method == "mink":
        return [mink_statistic(lp, t, options.k) for lp, t in zip(logprobs, texts)], [lp.numel() for lp in logprobs]
    probed = text_logprobs(lm, texts, contexts=icp_contexts(lm, texts, probes, options.shots), what=what)
    gaps = [float(-lp.mean() + lq.mean()) for lp, lq in zip(logprobs, probed)]
    return [-g for g in gaps], [lp.numel() for lp in logprobs]


def mia(lm: LM, candidates: Sequence[str], reference: Sequence[str], *, probes: Sequence[str] | None = None,
        **options: Any) -> MiaReport:
    """p-values that each candidate was a training member, against `reference` non-members.

    `reference`: texts known not to be in the training data, drawn like the candidates would be if
    they were not members. Options: see `MiaOptions` (`method` loss | zlib | mink | icp, `k`,
    `shots`, `probe_fraction`, `seed`). For `icp`, `probes` (optional) are public texts for the
    context; without them a `probe_fraction` of the reference set is used as probes.
    """
    check_model(lm)
    opts = check_options(MiaOptions, options, "mia")
    candidates = check_texts(candidates, "candidates")
    reference = check_texts(reference, "reference", min_count=2 if opts.method == "icp" and probes is None else 1)
    pool: list[str] = []
    if opts.method == "icp":
        if probes is not None:
            pool = check_texts(probes, "probes")
        else:
            shuffled = list(reference)
            random.Random(opts.seed).shuffle(shuffled)
            cut = min(len(shuffled) - 1, max(1, round(opts.probe_fraction * len(shuffled))))
            pool, reference = shuffled[:cut], shuffled[cut:]
    ref_stats, _ = statistics(lm, reference, opts, pool, "reference text")
    cand_stats, tokens = statistics(lm, candidates, opts, pool, "candidate")
    p = rank_p_values(torch.tensor(cand_stats), torch.tensor(ref_stats)).tolist()
    results = [MiaResult(i, s, pv, n) for i, (s, pv, n) in enumerate(zip(cand_stats, p, tokens))]
    return MiaReport(opts.method, results, ref_stats, len(pool))


__all__ = ["mia", "MiaOptions", "MiaResult", "MiaReport", "METHODS", "icp_contexts"]
