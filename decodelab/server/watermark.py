"""`POST /v1/decodelab/watermark/detect`: watermark p-values for texts, with `watermark.detect`'s
options and defaults (Besag-Clifford early stopping after 10 null hits; `"stop_after": null` or 0
runs every resample). Each result carries the p-value's resolution: resamples run, null hits,
whether the test stopped early and the bounds of the all-resamples p-value.

Example request body:
    {"texts": ["some text", [5, 6, 7]], "key": "my-key", "scheme": "exp"}
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from ..models.lm import LM
from ..watermark.detect import DEFAULT_RESAMPLES, DEFAULT_STOP_AFTER, detect
from ..watermark.schemes import DEFAULT_N, MAX_N
from .errors import APIError
from .schemas import _Strict, error_responses

MAX_TEXTS = 1000  # texts per request
MAX_SERVER_RESAMPLES = 100_000
# characters (or token ids) of all texts x resamples a request may ask for: about 1000 texts of 256
# tokens at 1000 resamples; larger jobs belong to `decodelab batch detect`
MAX_DETECT_WORK = 1_000_000_000


class DetectRequest(_Strict):
    texts: list[str | list[int]] = Field(min_length=1, max_length=MAX_TEXTS,
                                         description="texts, or token-id lists, to test")
    key: str = Field(description="the secret watermark key")
    scheme: str = Field("exp", description="exp | its | kgw | blackbox")
    model: str | None = Field(None, description="the model whose tokenizer and vocabulary the texts use")
    n: int = Field(DEFAULT_N, ge=1, le=MAX_N, description="EXP/ITS key length used at generation")
    resamples: int = Field(DEFAULT_RESAMPLES, ge=0, le=MAX_SERVER_RESAMPLES, description="permutation-test resamples")
    stop_after: int | None = Field(DEFAULT_STOP_AFTER, ge=0, le=MAX_SERVER_RESAMPLES,
                                   description="Besag-Clifford early stop at this many null hits; null or 0: all")
    block: int | None = Field(None, ge=1, le=100_000, description="sub-block length k (default: whole text)")
    edit: bool = Field(True, description="edit-robust statistic")
    gap_cost: float | None = Field(None, ge=0, le=100, description="edit statistic's gap cost")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the resampled keys")
    green_fraction: float = Field(0.25, gt=0, lt=1, description="KGW's green fraction")


def add_watermark_routes(app: FastAPI, models: dict[str, LM], resolve_model: Callable[[str | None], str]) -> None:
    """Register the detection route on `app` (models by id, names resolved as the other routes do)."""
    one_at_a_time = asyncio.Lock()

    @app.post("/v1/decodelab/watermark/detect", responses=error_responses(400, 401, 404, 413))
    async def watermark_detect(body: DetectRequest) -> dict[str, Any]:
        lm = models[resolve_model(body.model)]
        options = body.model_dump(exclude={"texts", "key", "scheme", "model"})
        work = sum(len(t) for t in body.texts) * max(1, body.resamples)
        if work > MAX_DETECT_WORK:
            raise APIError(400, f"texts x resamples is {work:.3g} (characters or tokens x resamples); at most "
                           f"{MAX_DETECT_WORK:.0e} per request: send fewer texts or resamples, or use "
                           "`decodelab batch detect`", param="texts", code="too_large")
        async with one_at_a_time:  # a detection uses every core: others queue rather than share them
            results = await run_in_threadpool(detect, lm, body.texts, key=body.key, scheme=body.scheme,
                                              progress=False, **options)
        return {"object": "list", "data": [{"index": i, **r.as_dict()} for i, r in enumerate(results)]}
