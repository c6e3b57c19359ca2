"""`POST /v1/decodelab/provenance/mia`, `/identifiers` and `/palimpsest`: the provenance tests over
HTTP, with the same option names, bounds and defaults as Python and the CLI (the fields are derived
from `MiaOptions` / `IdentifierOptions` / `PalimpsestOptions`). Fingerprint search (a forward per
vocabulary token) and the CoIn audit (proof files) are Python and CLI only.

Example request bodies:
    {"candidates": ["a text"], "reference": ["a non-member", "another"], "method": "mink", "k": 0.2}
    {"identifiers": ["alpha beta gamma delta"], "kind": "words", "length": 4, "alternatives": 999}
    {"texts": ["first trained", "second", "third"], "reference_model": "base", "resamples": 9999}
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import Field, create_model
from starlette.concurrency import run_in_threadpool

from ..models.lm import LM
from ..provenance.identifiers import IdentifierOptions, detect_identifiers
from ..provenance.mia import MiaOptions, mia
from ..provenance.palimpsest import PalimpsestOptions, palimpsest
from ..sampling.options import option_specs
from .schemas import _field, _Strict, error_responses

MAX_SERVER_TEXTS = 5000  # texts per list in one request; larger sets belong to the CLI
MAX_SERVER_TEXT_CHARS = 100_000
_Texts = list[str]


def _texts(description: str, required: bool = True) -> tuple[Any, Any]:
    field = Field(... if required else None, min_length=1, max_length=MAX_SERVER_TEXTS, description=description)
    return (_Texts if required else _Texts | None, field)


MiaRequest = create_model(
    "MiaRequest", __base__=_Strict,
    model=(str | None, Field(None, description="a served model id")),
    candidates=_texts("texts to test"),
    reference=_texts("known non-members, drawn like the candidates"),
    probes=_texts("icp: public probe texts (default: part of the reference)", required=False),
    **{s.name: _field(s) for s in option_specs(MiaOptions)},
)
IdentifierRequest = create_model(
    "IdentifierRequest", __base__=_Strict,
    model=(str | None, Field(None, description="a served model id")),
    identifiers=_texts("identifiers to test (drawn with the given kind and length)"),
    **{s.name: _field(s) for s in option_specs(IdentifierOptions)},
)

PalimpsestRequest = create_model(
    "PalimpsestRequest", __base__=_Strict,
    model=(str | None, Field(None, description="a served model id: the model under test")),
    texts=_texts("the training examples in their (random) training order, first trained first"),
    reference_model=(str | None, Field(None, description="a served model id independent of that training run")),
    **{s.name: _field(s) for s in option_specs(PalimpsestOptions)},
)


def _options(body: Any, cls: type) -> dict[str, Any]:
    return {s.name: getattr(body, s.name) for s in option_specs(cls) if getattr(body, s.name) is not None}


def _check_sizes(*lists: list[str] | None) -> None:
    from ..errors import InvalidOption

    for texts in lists:
        for t in texts or []:
            if len(t) > MAX_SERVER_TEXT_CHARS:
                raise InvalidOption(f"a text is longer than {MAX_SERVER_TEXT_CHARS} characters", code="too_large")


def add_provenance_routes(app: FastAPI, models: dict[str, LM], resolve_model: Callable[[str | None], str]) -> None:
    """Register the provenance routes on `app` (one test at a time: each uses every core)."""
    one_at_a_time = asyncio.Lock()
    errors = error_responses(400, 401, 404, 413)

    async def provenance_mia(body: Any) -> dict[str, Any]:
        lm = models[resolve_model(body.model)]
        _check_sizes(body.candidates, body.reference, body.probes)
        async with one_at_a_time:
            report = await run_in_threadpool(mia, lm, body.candidates, body.reference, probes=body.probes,
                                             **_options(body, MiaOptions))
        return {"object": "list", "method": report.method, "reference": len(report.reference_statistics),
                "data": [r.as_dict() for r in report.results]}

    async def provenance_identifiers(body: Any) -> dict[str, Any]:
        lm = models[resolve_model(body.model)]
        _check_sizes(body.identifiers)
        async with one_at_a_time:
            results = await run_in_threadpool(detect_identifiers, lm, body.identifiers,
                                              **_options(body, IdentifierOptions))
        return {"object": "list", "data": [r.as_dict() for r in results]}

    async def provenance_palimpsest(body: Any) -> dict[str, Any]:
        lm = models[resolve_model(body.model)]
        reference = models[resolve_model(body.reference_model)] if body.reference_model else None
        _check_sizes(body.texts)
        async with one_at_a_time:
            result = await run_in_threadpool(palimpsest, lm, body.texts, reference=reference,
                                             **_options(body, PalimpsestOptions))
        return result.as_dict()

    provenance_palimpsest.__annotations__["body"] = PalimpsestRequest
    app.post("/v1/decodelab/provenance/palimpsest", responses=errors)(provenance_palimpsest)
    provenance_mia.__annotations__["body"] = MiaRequest
    provenance_identifiers.__annotations__["body"] = IdentifierRequest
    app.post("/v1/decodelab/provenance/mia", responses=errors)(provenance_mia)
    app.post("/v1/decodelab/provenance/identifiers", responses=errors)(provenance_identifiers)
