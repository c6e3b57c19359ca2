"""Per-token records, run statistics and the output of a generation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TokenRecord:
    """One generated token. `logprob`/`entropy`/`top` are under the model's raw distribution
    (before sampler processing); `source` says how the token was produced: "target" (sampled
    from the target), "draft" (a draft token the verifier accepted) or "bonus"/"correction"
    (the token a verifier emits after a fully accepted / a rejected proposal)."""

    token_id: int
    text: str
    logprob: float
    entropy: float
    top: list[tuple[int, str, float]] = field(default_factory=list)
    source: str = "target"
    extra: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenerationStats:
    """Counters for one row of a generation."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    target_forwards: int = 0
    draft_forwards: int = 0
    verify_steps: int = 0
    proposed: int = 0
    accepted: int = 0
    acceptance_by_position: list[int] = field(default_factory=list)
    proposed_by_position: list[int] = field(default_factory=list)
    wall_time: float = 0.0
    prefill_time: float = 0.0
    draft_time: float = 0.0
    verify_time: float = 0.0
    constraint_checks: int = 0  # constrained generation: grammar checks (AWRS) made
    constraint_time: float = 0.0  # seconds spent computing masks / checks
    resamples: int = 0  # SMC resampling steps
    # lossy methods (decodelab.lossy): emitted tokens the exact method would not have produced
    # (None: not a lossy run)
    lossy_tokens: int | None = None

    @property
    def mean_accepted_length(self) -> float:
        """Tokens emitted per verify step, bonus/correction token included."""
        return self.new_tokens / self.verify_steps if self.verify_steps else 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def lossy_fraction(self) -> float | None:
        """Lossy methods: the fraction of emitted tokens the exact method would not have produced."""
        if self.lossy_tokens is None:
            return None
        return self.lossy_tokens / self.new_tokens if self.new_tokens else 0.0

    @property
    def tokens_per_second(self) -> float:
        decode = self.wall_time - self.prefill_time
        return self.new_tokens / decode if decode > 0 else 0.0

    def record_acceptance(self, proposed: int, accepted: int, depth: int | None = None) -> None:
        """One verify step: `proposed` draft tokens (tree nodes), `accepted` of them on the
        accepted path; by-position counts go by depth (a tree of depth d offers d positions)."""
        self.proposed += proposed
        self.accepted += accepted
        for position in range(proposed if depth is None else depth):
            while len(self.proposed_by_position) <= position:
                self.proposed_by_position.append(0)
                self.acceptance_by_position.append(0)
            self.proposed_by_position[position] += 1
            if position < accepted:
                self.acceptance_by_position[position] += 1

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            mean_accepted_length=self.mean_accepted_length,
            acceptance_rate=self.acceptance_rate,
            tokens_per_second=self.tokens_per_second,
        )
        if self.lossy_tokens is None:
            del out["lossy_tokens"]
        else:
            out["lossy_fraction"] = self.lossy_fraction
        return out


@dataclass
class GenerationOutput:
    """What `generate` returns for one prompt. `token_ids` holds the generated ids only."""

    text: str
    token_ids: list[int]
    records: list[TokenRecord]
    stats: GenerationStats
    finish_reason: str  # "stop" (EOS, stop string, complete grammar), "length" (max tokens or context),
    # "constraint" (a constraint no allowed token can continue), "timeout" (the server's time limit cut it)
    prompt_token_ids: list[int] = field(default_factory=list)
    # constrained generation (None when unconstrained): whether the text is a complete member
    # of the language; AWRS/SMC: the log importance weight of this text and (SMC) the log
    # marginal-likelihood estimate log p(text in language) and every particle
    constraint_satisfied: bool | None = None
    log_weight: float | None = None
    log_marginal_likelihood: float | None = None
    particles: list[dict[str, Any]] | None = None
    # per-method results, by method name (out.results["smc"], out.results["beam"], ...)
    results: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form the CLI prints and the server sends (one serialisation for both)."""
        out = {
            "text": self.text,
            "token_ids": self.token_ids,
            "finish_reason": self.finish_reason,
            "records": [r.as_dict() for r in self.records],
            "stats": self.stats.as_dict(),
        }
        for name in ("constraint_satisfied", "log_weight", "log_marginal_likelihood", "particles"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.results:
            out["results"] = self.results
        return out
