"""CoIn-style audit of hidden reasoning tokens: is the billed count real, and are the opened tokens
genuine reasoning rather than filler?

Paper: Sun et al. 2025, *CoIn: Counting the invisible reasoning tokens in commercial opaque LLM APIs*
(arXiv 2505.13778). A provider bills N hidden tokens. CoIn has the provider commit to them in a hash
tree whose root binds N, then lets an auditor open a few random positions with proofs (count
verification), and checks that the opened tokens look like genuine reasoning (semantic validity).

Built here:
- `commit(token_ids, secret)`: a Merkle tree over salted leaves H(salt_i, i, token_i) (the paper
  hashes token embedding fingerprints; we hash the ids, with a per-leaf salt so unopened tokens stay
  hidden); the root also binds the count. `open_blocks` reveals blocks of consecutive tokens with
  their inclusion proofs; `verify_block` checks a proof against the root and the claimed count.
- `audit(lm, blocks, calibration)`: the validity test. Each opened block's statistic is minus its
  mean token log-probability under the auditor's model, given the prompt (filler is unlikely text);
  its rank p-value is taken against blocks of traces known to be genuine (`calibration`), and the k
  block p-values are combined by Bonferroni, p = min(1, k * min p_i). Valid (P(p <= a) <= a) when
  genuine audited blocks are exchangeable with the calibration blocks; no independence is assumed.
  The paper instead trains matching heads on embeddings of reasoning and answer; a likelihood
  statistic needs no training but cannot see fluent filler unrelated to the question (see
  docs/benchmarks.md).

Example:
    >>> c = commit([5, 6, 7, 8, 9], secret=b"provider key")
    >>> (block,) = open_blocks([5, 6, 7, 8, 9], b"provider key", starts=[1], width=2)
    >>> c.count, block.token_ids, verify_block(c, block)
    (5, [6, 7], True)
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..errors import InvalidOption
from ..models.lm import LM
from ..sampling.options import check_options, option
from .likelihood import start_ids, target_logprobs
from .pvalues import rank_p_values
from .texts import check_model

MAX_TOKENS = 10_000_000
MAX_BLOCKS = 1000


def _h(*parts: bytes) -> bytes:
    return hashlib.sha256(b"\x00".join(parts)).digest()


def _salt(secret: bytes, i: int) -> bytes:
    return _h(b"salt", secret, str(i).encode())


def _leaf(salt: bytes, i: int, token: int) -> bytes:
    return _h(b"leaf", salt, str(i).encode(), str(int(token)).encode())


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    levels = [leaves]
    while len(levels[-1]) > 1:
        prev = levels[-1]
        levels.append([_h(b"node", prev[j], prev[j + 1] if j + 1 < len(prev) else prev[j])
                       for j in range(0, len(prev), 2)])
    return levels


@dataclass(frozen=True)
class Commitment:
    """What the provider publishes with the bill: the root (binding tokens and count) and the count."""

    root: str
    count: int


@dataclass
class OpenedBlock:
    """Consecutive hidden tokens from `start`, each with its salt and Merkle inclusion proof."""

    start: int
    token_ids: list[int]
    salts: list[str]
    proofs: list[list[str]]


def _check_ids(token_ids: Sequence[int]) -> list[int]:
    ids = list(token_ids)
    if not ids:
        raise InvalidOption("no hidden tokens to commit to", param="token_ids")
    if len(ids) > MAX_TOKENS:
        raise InvalidOption(f"at most {MAX_TOKENS} hidden tokens", param="token_ids", code="too_large")
    if not all(isinstance(t, int) and t >= 0 for t in ids):
        raise InvalidOption("token ids must be non-negative integers", param="token_ids")
    return ids


def commit(token_ids: Sequence[int], secret: bytes) -> Commitment:
    """The provider's commitment to its hidden tokens."""
    ids = _check_ids(token_ids)
    top = _levels([_leaf(_salt(secret, i), i, t) for i, t in enumerate(ids)])[-1][0]
    return Commitment(_h(b"root", top, str(len(ids)).encode()).hex(), len(ids))


def open_blocks(token_ids: Sequence[int], secret: bytes, starts: Sequence[int], width: int) -> list[OpenedBlock]:
    """The provider's answer to an audit: the blocks [start, start + width) with proofs."""
    ids = _check_ids(token_ids)
    levels = _levels([_leaf(_salt(secret, i), i, t) for i, t in enumerate(ids)])
    out = []
    for start in starts:
        if not 0 <= start < len(ids):
            raise InvalidOption(f"block start {start} is outside the {len(ids)} hidden tokens", param="starts")
        positions = range(start, min(start + width, len(ids)))
        proofs = []
        for i in positions:
            path, j = [], i
            for level in levels[:-1]:
                sibling = j ^ 1
                path.append((level[sibling] if sibling < len(level) else level[j]).hex())
                j //= 2
            proofs.append(path)
        out.append(OpenedBlock(start, [ids[i] for i in positions], [_salt(secret, i).hex() for i in positions],
                               proofs))
    return out


def verify_block(commitment: Commitment, block: OpenedBlock) -> bool:
    """True when every token of the block is at its position in the committed tree of `count` leaves."""
    for k, (token, salt, proof) in enumerate(zip(block.token_ids, block.salts, block.proofs)):
        i = block.start + k
        if not 0 <= i < commitment.count:
            return False
        node, j = _leaf(bytes.fromhex(salt), i, token), i
        for sibling in proof:
            s = bytes.fromhex(sibling)
            node = _h(b"node", node, s) if j % 2 == 0 else _h(b"node", s, node)
            j //= 2
        if _h(b"root", node, str(commitment.count).encode()).hex() != commitment.root:
            return False
    return True


def sample_starts(count: int, blocks: int, width: int, seed: int) -> list[int]:
    """The auditor's random block starts (distinct, non-overlapping where the count allows)."""
    slots = max(1, count // width)
    rng = random.Random(seed)
    return sorted(s * width for s in rng.sample(range(slots), min(blocks, slots)))


@dataclass
class CoinOptions:
    """Options of `dl.provenance.audit` (also the CLI's)."""

    blocks: int = option(8, "hidden-token blocks opened per audit", ge=1, le=MAX_BLOCKS)
    width: int = option(16, "tokens per opened block", ge=1, le=4096)
    seed: int = option(0, "seed of the calibration blocks' positions", ge=0, le=2**63 - 1)


@dataclass
class AuditResult:
    """Combined p-value (small = filler among the opened tokens), and each block's statistic and p.
    `min_p_value` = min(1, k / (calibration blocks + 1)) is the smallest p-value this audit can give:
    to test at level a, calibrate on at least k / a blocks."""

    p_value: float
    block_p_values: list[float]
    block_statistics: list[float]
    calibration_blocks: int
    min_p_value: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _block_statistics(lm: LM, prompts: Sequence[list[int]], blocks: Sequence[Sequence[int]]) -> torch.Tensor:
    """Minus the mean log-probability of each block after the start token and its prompt (one batch)."""
    start = start_ids(lm)
    lps = target_logprobs(lm, [start + p for p in prompts], blocks, what="hidden-token block")
    return torch.tensor([-float(lp.mean()) for lp in lps], dtype=torch.float64)


def calibration_blocks(traces: Sequence[Sequence[int]], width: int, per_trace: int, seed: int) -> list[list[int]]:
    """Random blocks of genuine traces, sampled like an audit samples them."""
    out = []
    for n, trace in enumerate(traces):
        for s in sample_starts(len(trace), per_trace, width, seed + n):
            out.append(list(trace[s:s + width]))
    return out


class Auditor:
    """The validity test, calibrated once on genuine traces and then applied to many audits.

    `calibration`: pairs (prompt, genuine hidden trace token ids) from the same model on similar
    prompts; `blocks` / `width` / `seed` sample their blocks as an audit samples the audited trace's.

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=80)
        >>> auditor = Auditor(lm, [("q", list(range(5, 40)))], blocks=2, width=4)
        >>> 0 < auditor.audit("q", [[5, 6, 7, 8]]).p_value <= 1
        True
    """

    def __init__(self, lm: LM, calibration: Sequence[tuple[str | Sequence[int], Sequence[int]]], **options: Any):
        check_model(lm)
        self.lm = lm
        self.options = check_options(CoinOptions, options, "coin")
        if not calibration:
            raise InvalidOption("the calibration set of genuine traces is empty", param="calibration", code="too_few")
        prompts, blocks = [], []
        for n, (prompt, trace) in enumerate(calibration):
            found = calibration_blocks([_check_ids(trace)], self.options.width, self.options.blocks,
                                       self.options.seed + n)
            prompts += [self._ids(prompt)] * len(found)
            blocks += found
        self.null_statistics = _block_statistics(lm, prompts, blocks)

    def _ids(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            return list(self.lm.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        return list(prompt)

    def audit(self, prompt: str | Sequence[int], opened: Sequence[Sequence[int]]) -> AuditResult:
        """p-value that some opened block of hidden tokens is not genuine reasoning."""
        if not opened or any(len(b) == 0 for b in opened):
            raise InvalidOption("no opened blocks to audit (or an empty block)", param="opened")
        if len(opened) > MAX_BLOCKS:
            raise InvalidOption(f"at most {MAX_BLOCKS} opened blocks per audit", param="opened", code="too_large")
        ids = self._ids(prompt)
        audited = _block_statistics(self.lm, [ids] * len(opened), [list(b) for b in opened])
        p = rank_p_values(audited, self.null_statistics)
        combined = min(1.0, len(opened) * float(p.min()))
        n = int(self.null_statistics.numel())
        return AuditResult(combined, p.tolist(), audited.tolist(), n, min(1.0, len(opened) / (n + 1)))


def audit(lm: LM, prompt: str | Sequence[int], opened: Sequence[Sequence[int]],
          calibration: Sequence[tuple[str | Sequence[int], Sequence[int]]], **options: Any) -> AuditResult:
    """p-value that some opened block of hidden tokens is not genuine reasoning: `Auditor(lm,
    calibration, **options).audit(prompt, opened)` (build an `Auditor` once to audit many traces)."""
    return Auditor(lm, calibration, **options).audit(prompt, opened)


def inflate(token_ids: Sequence[int], fraction: float, *, kind: str = "random", vocab_size: int,
            seed: int = 0) -> list[int]:
    """Synthetic inflation for evaluations: insert round(fraction * n) filler tokens in one run at a
    random place. `kind`: "random" (uniform token ids) or "shuffled" (the trace's own tokens in a
    random order: same token statistics, no sense)."""
    ids = _check_ids(token_ids)
    if not 0 <= fraction <= 100:
        raise InvalidOption("fraction must be in [0, 100]", param="fraction")
    rng = random.Random(seed)
    n = round(fraction * len(ids))
    if kind == "random":
        filler = [rng.randrange(vocab_size) for _ in range(n)]
    elif kind == "shuffled":
        filler = [ids[rng.randrange(len(ids))] for _ in range(n)]
    else:
        raise InvalidOption(f"unknown inflation kind {kind!r} (random, shuffled)", param="kind")
    at = rng.randrange(len(ids) + 1)
    return ids[:at] + filler + ids[at:]


__all__ = ["commit", "open_blocks", "verify_block", "sample_starts", "audit", "Auditor", "inflate", "Commitment",
           "OpenedBlock", "CoinOptions", "AuditResult", "calibration_blocks"]
