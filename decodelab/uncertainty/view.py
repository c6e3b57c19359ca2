"""Terminal and CSV views of per-token scores (shared by `decodelab score`, `attribute` and `compress`)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

# scores where a high value means the model is sure (coloured green when high)
CONFIDENT_WHEN_HIGH = {"logprob", "max_prob", "margin", "ccp", "importance"}


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of dicts as CSV text (columns in first-row order)."""
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def colour_scale(values: Sequence[float], high_is_good: bool) -> list[float]:
    """Each value as 0 (bad/red) .. 1 (good/green) between the column's min and max."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return [0.5] * len(values)
    low, high = min(finite), max(finite)
    span = high - low or 1.0
    scaled = [0.5 if v is None or not math.isfinite(v) else (v - low) / span for v in values]
    return scaled if high_is_good else [1 - s for s in scaled]


def coloured_text(pieces: Sequence[str], values: Sequence[float], column: str) -> Any:
    """A rich Text: each piece on a red-to-green background by its score."""
    from rich.text import Text

    text = Text()
    for piece, level in zip(pieces, colour_scale(values, column in CONFIDENT_WHEN_HIGH)):
        red, green = int(200 * (1 - level)), int(200 * level)
        text.append(piece, style=f"black on rgb({red + 55},{green + 55},80)")
    return text


__all__ = ["to_csv", "colour_scale", "coloured_text", "CONFIDENT_WHEN_HIGH"]
