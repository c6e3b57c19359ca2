"""`Detection`: one text's watermark detection result, shared by every detector."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Detection:
    """One text's result: p-value (small = watermarked), the statistic and its details."""

    p_value: float
    statistic: float
    tokens: int
    scheme: str
    resamples: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
