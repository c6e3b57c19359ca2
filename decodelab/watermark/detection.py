"""`Detection`: one text's watermark detection result, shared by every detector."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Detection:
    """One text's result: p-value (small = watermarked), the statistic and its details.

    Permutation tests (EXP/ITS) also say how fine the p-value is: `resamples` run, null `hits` among
    them, whether the test `stopped_early` (Besag-Clifford), and `p_value_bounds`, the range of the
    p-value that every requested resample would have given (a single point when all ran; its low end
    is at least 1 / (requested resamples + 1), the smallest p-value the test can report).
    """

    p_value: float
    statistic: float
    tokens: int
    scheme: str
    resamples: int = 0
    hits: int = 0
    stopped_early: bool = False
    p_value_bounds: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.p_value_bounds is not None:
            out["p_value_bounds"] = list(self.p_value_bounds)
        return out
