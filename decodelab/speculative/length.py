"""Draft length control: fixed k, or chosen online from observed acceptance and measured cost.

Training-free, in the spirit of SpecDec++ (Huang et al., 2024, "SpecDec++: Boosting
Speculative Decoding via Adaptive Candidate Lengths") and Adaptive Draft-Verification (Liu et
al., 2024) but without a trained head: acceptance per draft position is modelled as geometric
with rate alpha, estimated online per row (alpha = accepted / (accepted + rejections), with
exponential forgetting). Expected tokens per step with k drafts is (1 - alpha^(k+1)) / (1 - alpha);
the cost of a step is t(k+1) for the target plus k x the draft's per-token cost, where t(n) is the
measured time to verify n tokens on this machine (`cost.verify_cost_curve`). The k that
maximises tokens per second is chosen. On CPUs t(n) is not monotonic (2-3 rows can cost more
than 4-8), which is exactly what a fixed k ignores.
"""

from __future__ import annotations

from ..errors import InvalidOption
from .tree_shape import interpolated_cost


class DraftLength:
    """Chooses how many tokens to draft for each row.

    Example:
        >>> length = DraftLength(k_max=8, adaptive=True, verify_cost={1: 1.0, 2: 1.7, 4: 1.8, 8: 2.0, 16: 2.6})
        >>> length.reset(1); length.observe([8], [8]); length.choose(0) >= 1
        True
    """

    def __init__(self, k_max: int = 8, *, adaptive: bool = True, verify_cost: dict[int, float] | None = None,
                 draft_cost: float = 0.0, prior_alpha: float = 0.6, forgetting: float = 0.9, k_min: int = 1,
                 probe_every: int = 8):
        if isinstance(k_max, bool) or not isinstance(k_max, int) or k_max < 1:
            raise InvalidOption(f"k must be a positive integer, got {k_max!r}")
        if not 0 < prior_alpha < 1 or not 0 < forgetting <= 1:
            raise InvalidOption("prior_alpha must be in (0, 1) and forgetting in (0, 1]")
        self.k_max, self.k_min = k_max, max(1, min(k_min, k_max))
        self.adaptive = adaptive
        self.verify_cost = dict(verify_cost or {})
        self.draft_cost = float(draft_cost)
        self.prior_alpha, self.forgetting = prior_alpha, forgetting
        self.probe_every = max(1, int(probe_every))
        self.successes: list[float] = []
        self.failures: list[float] = []
        self.idle: list[int] = []

    def reset(self, rows: int) -> None:
        # a prior worth ~2 observations so that the first steps neither over- nor under-draft
        self.successes = [2 * self.prior_alpha] * rows
        self.failures = [2 * (1 - self.prior_alpha)] * rows
        self.idle = [0] * rows

    def alpha(self, row: int) -> float:
        s, f = self.successes[row], self.failures[row]
        return min(max(s / (s + f), 1e-3), 0.999)

    def observe(self, proposed: list[int], accepted: list[int]) -> None:
        for row, (n, a) in enumerate(zip(proposed, accepted)):
            if n == 0 or row >= len(self.successes):
                continue
            self.successes[row] = self.forgetting * self.successes[row] + a
            self.failures[row] = self.forgetting * self.failures[row] + (1 if a < n else 0)

    def select_rows(self, rows: list[int]) -> None:
        self.successes = [self.successes[r] for r in rows]
        self.failures = [self.failures[r] for r in rows]
        self.idle = [self.idle[r] for r in rows]

    def cost(self, n_verify: int) -> float:
        """Interpolated time to verify n tokens (1 per token if no curve was measured)."""
        if not self.verify_cost:
            return 1.0 + 0.05 * (n_verify - 1)
        return interpolated_cost(self.verify_cost, n_verify)

    def expected_rate(self, k: int, alpha: float) -> float:
        tokens = (1 - alpha ** (k + 1)) / (1 - alpha)
        return tokens / (self.cost(k + 1) + k * self.draft_cost)

    def choose(self, row: int) -> int:
        if not self.adaptive:
            return self.k_max
        alpha = self.alpha(row)
        best_k, best_rate = 0, self.expected_rate(0, alpha)
        for k in range(self.k_min, self.k_max + 1):
            rate = self.expected_rate(k, alpha)
            if rate > best_rate:
                best_k, best_rate = k, rate
        if best_k == 0:
            # not drafting teaches nothing about alpha: probe with k_min now and then
            self.idle[row] += 1
            if self.idle[row] >= self.probe_every:
                self.idle[row] = 0
                return self.k_min
        return best_k
