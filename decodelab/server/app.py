"""The FastAPI app: OpenAI-compatible endpoints, /health, /metrics and the token viewer page.

Shapes follow OpenAI's completions and chat completions APIs. Differences worth knowing:
logprobs (and `records`) are under the model's raw distribution, before sampler processing
(temperature, top-p, ...), as `TokenRecord` defines them; sampler fields left out take the
model's own generation config, as in `dl.generate`; a row stopped by the time limit keeps its
partial text and ends with finish_reason "timeout" (not "length": it did not reach max_tokens).

Constrained generation: `response_format` {"type": "json_schema", "json_schema": {"name", "schema",
"strict"}} or {"type": "json_object"} on both endpoints, or decodelab's fields `regex`, `json_schema`,
`grammar`, `constraint_method`, `particles`, `ess_threshold`, `token_healing` (as in `dl.generate`);
one source of a constraint per request. `strict` is accepted and changes nothing: the grammar always
holds. A constrained choice carries `constraint_satisfied` (and, for AWRS/SMC, `log_weight`,
`log_marginal_likelihood`, `particles`; null stands for -inf); its finish_reason may be
"constraint". SMC streams each choice's text as one chunk when it is done, as `dl.stream` does.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..decoding.detokenize import validate_stop
from ..decoding.method import methods
from ..decoding.records import GenerationOutput, TokenRecord
from ..errors import DecodelabError, ModelNotFound
from ..models.lm import LM
from ..sampling.config import SamplingConfig
from . import metrics
from .engine import Engine, Job, batch_key, check_request, constraint_fields
from .errors import APIError, error_body, error_response, from_exception
from .provenance import add_provenance_routes
from .schemas import build_request_models, error_responses
from .watermark import add_watermark_routes

STATIC = Path(__file__).parent / "static"


@dataclass
class ServerConfig:
    """Limits and switches of one server.

    Example:
        >>> ServerConfig(api_key="secret", max_batch=8).max_tokens_limit
        1024
    """

    api_key: str | None = None
    max_batch: int = 16  # rows per batch
    queue_size: int = 256  # queued requests before 429
    max_tokens_limit: int = 1024  # largest max_tokens a request may ask for
    timeout: float = 120.0  # seconds a request may take, queueing included
    max_body_bytes: int = 1_000_000
    max_rows_per_request: int = 16  # prompts x n
    batch_wait: float = 0.01  # seconds the engine waits for more requests to batch
    completion_default_max_tokens: int = 16  # OpenAI's default for /v1/completions
    continuous_batching: bool = True  # queued requests join a running batch between steps
    measure_costs: bool = True  # measure each model's verify cost t(n) at start (once per machine; cached)


class _ClientGone(Exception):
    pass


def create_app(models: dict[str, LM], config: ServerConfig | None = None, *,
               aliases: dict[str, str] | None = None) -> FastAPI:
    """An app serving already-loaded models under the given ids (the first is the default).

    Requests name models by id (or an alias); nothing a request says is ever loaded or opened.

    Example:
        >>> import decodelab as dl
        >>> app = create_app({"tiny-random": dl.load("tiny-random", vocab_size=64)})
    """
    config = config or ServerConfig()
    engine = Engine(models, max_batch=config.max_batch, queue_size=config.queue_size, batch_wait=config.batch_wait,
                    max_rows_per_request=config.max_rows_per_request, continuous=config.continuous_batching,
                    measure_costs=config.measure_costs)
    _, CompletionRequest, ChatCompletionRequest = build_request_models()
    requests = metrics.RequestCounter()
    aliases = {k.lower(): v for k, v in (aliases or {}).items()}
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    app = FastAPI(title="decodelab", version=_version(), lifespan=lifespan,
                  description="OpenAI-compatible generation with decodelab's samplers and methods.")
    app.state.engine = engine
    app.state.config = config
    app.state.models = models
    app.add_middleware(_Guard, config=config, requests=requests)

    # ------------------------------------------------------------------ errors
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Framework errors (undecodable body, unknown path, wrong method) get the same body shape.
        message = exc.detail if isinstance(exc.detail, str) else "invalid request"
        if message == "There was an error parsing the body":
            message = "the request body is not valid JSON"
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        status, body = from_exception(exc)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(DecodelabError)
    async def _dl_error(request: Request, exc: DecodelabError) -> JSONResponse:
        status, body = from_exception(exc)
        headers = {"Retry-After": "1"} if status == 429 else None
        return JSONResponse(body, status_code=status, headers=headers)

    # ------------------------------------------------------------------ helpers
    def resolve_model(name: str | None) -> str:
        if name is None:
            return next(iter(models))
        if name in models:
            return name
        alias = aliases.get(name.lower())
        if alias is not None:
            return alias
        raise ModelNotFound(f"the model '{name}' is not served here; served: {', '.join(models)}")

    def make_job(body: Any, prompts: list[Any], *, chat: bool | None, max_tokens: int | None,
                 default_max: int, logprobs: int | None, loop: asyncio.AbstractEventLoop,
                 queue: asyncio.Queue) -> Job:
        model_id = resolve_model(body.model)
        lm = models[model_id]
        max_new = default_max if max_tokens is None else max_tokens
        if max_new > config.max_tokens_limit:
            raise APIError(400, f"max_tokens is {max_new}; this server allows at most {config.max_tokens_limit}",
                           param="max_tokens", code="max_tokens_too_large")
        if len(prompts) * body.n > config.max_rows_per_request:
            raise APIError(400, f"prompts x n is {len(prompts) * body.n}; at most {config.max_rows_per_request}",
                           param="n")
        options = body.method_options()
        alone = check_request(lm, options, rows=len(prompts) * body.n, max_rows=config.max_rows_per_request)
        stop = validate_stop(body.stop)
        records = bool(body.records or logprobs is not None)
        top = logprobs or (5 if body.records else 0)  # the viewer shows top alternatives on hover

        def send(message: tuple) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, message)
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                pass

        job = Job(model=model_id, prompts=prompts, chat=chat, n=body.n, seed=body.seed, max_new_tokens=max_new,
                  stop=stop, top_logprobs=top if records else 0, records=records, options=options,
                  deadline=time.monotonic() + config.timeout, send=send, alone=alone)
        job.key = batch_key(job)
        return job

    async def next_message(queue: asyncio.Queue, request: Request, job: Job) -> tuple:
        while True:
            try:
                return await asyncio.wait_for(queue.get(), timeout=0.5)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    raise _ClientGone() from None

    async def run(request: Request, body: Any, prompts: list[Any], *, kind: str, chat: bool | None,
                  max_tokens: int | None, default_max: int, logprobs: int | None) -> Any:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        job = make_job(body, prompts, chat=chat, max_tokens=max_tokens, default_max=default_max,
                       logprobs=logprobs, loop=loop, queue=queue)
        engine.submit(job)
        finished = False
        try:
            first = await next_message(queue, request, job)
            if first[0] == "error":
                finished = True
                raise first[1]
            prompt_counts = first[1]
            meta = _Meta(kind=kind, id=_new_id(kind), created=int(time.time()), model=job.model, n=job.n,
                         rows=job.rows, logprobs=logprobs, records=body.records,
                         prompt_tokens=sum(prompt_counts))
            if body.stream:
                include_usage = bool(body.stream_options and body.stream_options.include_usage)
                finished = True  # the stream generator owns the job from here
                return StreamingResponse(_stream(meta, queue, job, engine, include_usage), media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            while True:
                message = await next_message(queue, request, job)
                if message[0] == "done":
                    finished = True
                    return JSONResponse(_full_response(meta, message[1]))
                if message[0] == "error":
                    finished = True
                    raise message[1]
        except _ClientGone:
            return JSONResponse(error_body(499, "client closed the request"), status_code=499)
        except (DecodelabError, APIError):
            raise
        except Exception as exc:  # noqa: BLE001 - an engine failure that is not the client's fault
            status, payload = from_exception(exc)
            return JSONResponse(payload, status_code=status)
        finally:
            if not finished:
                engine.cancel(job)

    # ------------------------------------------------------------------ routes
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(models), "queue_length": engine.queue_length}

    api_errors = error_responses(401)
    generation_errors = {
        200: {"description": "a completion (JSON), or server-sent events when stream=true",
              "content": {"text/event-stream": {}}},
        **error_responses(400, 401, 404, 413, 429, 499, 503),
    }

    @app.get("/metrics", response_class=PlainTextResponse, responses=api_errors)
    async def metrics_page() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(requests, engine), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", responses=api_errors)
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "decodelab"} for name in models]}

    @app.get("/v1/models/{model_id}", responses=error_responses(401, 404))
    async def get_model(model_id: str) -> dict[str, Any]:
        name = resolve_model(model_id)
        return {"id": name, "object": "model", "created": created, "owned_by": "decodelab"}

    @app.get("/v1/decodelab/info", responses=api_errors)
    async def info() -> dict[str, Any]:
        """What the viewer needs: models, speculative methods, sampler options, limits."""
        return {"models": list(models), "speculative_methods": [m.name for m in methods("speculative")],
                "sampler_options": SamplingConfig.option_names(),
                "max_tokens_limit": config.max_tokens_limit, "max_batch": config.max_batch}

    @app.get("/v1/decodelab/methods", responses=api_errors)
    async def list_methods() -> list[dict[str, Any]]:
        """Every registered method: slot, paper, capabilities and options (as `decodelab methods --json`)."""
        return json.loads(json.dumps([m.describe() for m in methods()], default=str))

    async def completions(request: Request, body: Any) -> Any:
        if body.suffix:
            raise APIError(400, "suffix is not supported", param="suffix", code="unsupported")
        if body.echo:
            raise APIError(400, "echo is not supported", param="echo", code="unsupported")
        prompt = body.prompt
        prompts = [prompt] if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)) else list(prompt)
        return await run(request, body, prompts, kind="completion", chat=body.chat, max_tokens=body.max_tokens,
                         default_max=min(config.completion_default_max_tokens, config.max_tokens_limit),
                         logprobs=body.logprobs)

    async def chat_completions(request: Request, body: Any) -> Any:
        if body.max_tokens is not None and body.max_completion_tokens is not None:
            raise APIError(400, "give max_tokens or max_completion_tokens, not both", param="max_tokens")
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        if body.top_logprobs and not body.logprobs:
            raise APIError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
        return await run(request, body, [messages], kind="chat", chat=None,
                         max_tokens=body.max_completion_tokens or body.max_tokens,
                         default_max=config.max_tokens_limit,
                         logprobs=(body.top_logprobs or 0) if body.logprobs else None)

    # the request models are built from the registry when the app is made: set them as annotations
    completions.__annotations__["body"] = CompletionRequest
    chat_completions.__annotations__["body"] = ChatCompletionRequest
    app.post("/v1/completions", responses=generation_errors)(completions)
    app.post("/v1/chat/completions", responses=generation_errors)(chat_completions)
    add_watermark_routes(app, models, resolve_model)
    add_provenance_routes(app, models, resolve_model)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


# ---------------------------------------------------------------------- responses
@dataclass
class _Meta:
    kind: str  # "completion" or "chat"
    id: str
    created: int
    model: str
    n: int
    rows: int
    logprobs: int | None  # None: no logprobs; else how many top alternatives per token
    records: bool
    prompt_tokens: int


def _new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def _completion_logprobs(records: list[TokenRecord], top: int, offset: int = 0) -> dict[str, Any]:
    offsets, position = [], offset
    for record in records:
        offsets.append(position)
        position += len(record.text)
    return {
        "tokens": [r.text for r in records],
        "token_logprobs": [r.logprob for r in records],
        "top_logprobs": [{text: lp for _, text, lp in r.top[:top]} for r in records],
        "text_offset": offsets,
    }


def _chat_logprobs(records: list[TokenRecord], top: int) -> dict[str, Any]:
    def entry(text: str, logprob: float) -> dict[str, Any]:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8", "replace"))}

    return {"content": [{**entry(r.text, r.logprob), "top_logprobs": [entry(t, lp) for _, t, lp in r.top[:top]]}
                        for r in records], "refusal": None}


def _logprobs(meta: _Meta, records: list[TokenRecord], offset: int = 0) -> dict[str, Any] | None:
    if meta.logprobs is None:
        return None
    if meta.kind == "chat":
        return _chat_logprobs(records, meta.logprobs)
    return _completion_logprobs(records, meta.logprobs, offset)


def _usage(meta: _Meta, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": meta.prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": meta.prompt_tokens + completion_tokens}


def _full_response(meta: _Meta, outputs: list[GenerationOutput]) -> dict[str, Any]:
    choices = []
    for index, out in enumerate(outputs):
        choice: dict[str, Any] = {"index": index}
        if meta.kind == "chat":
            choice["message"] = {"role": "assistant", "content": out.text, "refusal": None}
        else:
            choice["text"] = out.text
        choice["logprobs"] = _logprobs(meta, out.records)
        choice["finish_reason"] = out.finish_reason
        choice.update(constraint_fields(out) or {})
        if meta.records:
            choice["records"] = _records(out.records)
            choice["stats"] = out.stats.as_dict()
        choices.append(choice)
    return {"id": meta.id, "object": "chat.completion" if meta.kind == "chat" else "text_completion",
            "created": meta.created, "model": meta.model, "system_fingerprint": None, "choices": choices,
            "usage": _usage(meta, sum(len(o.token_ids) for o in outputs))}


def _chunk(meta: _Meta, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
    body = {"id": meta.id, "object": "chat.completion.chunk" if meta.kind == "chat" else "text_completion",
            "created": meta.created, "model": meta.model, "system_fingerprint": None, "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def _stream(meta: _Meta, queue: asyncio.Queue, job: Job, engine: Engine,
                  include_usage: bool) -> AsyncIterator[str]:
    """SSE chunks until the job is done; the job is cancelled if the client goes away."""
    done = False
    offsets = [0] * meta.rows
    generated = 0
    try:
        if meta.kind == "chat":
            yield _chunk(meta, [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                 "finish_reason": None} for i in range(meta.rows)])
        while True:
            message = await queue.get()
            if message[0] == "tokens":
                _, row, token_ids, text, records, finish, fields = message
                generated += len(token_ids)
                if not (text or finish or (records and (meta.records or meta.logprobs is not None))):
                    continue
                choice: dict[str, Any] = {"index": row}
                if meta.kind == "chat":
                    choice["delta"] = {"content": text} if text else {}
                else:
                    choice["text"] = text
                choice["logprobs"] = _logprobs(meta, records, offsets[row])
                choice["finish_reason"] = finish if finish != "cancelled" else None
                choice.update(fields or {})  # constraint_satisfied, log_weight, ... with the finish reason
                if meta.records:
                    choice["records"] = _records(records)
                offsets[row] += sum(len(r.text) for r in records)
                yield _chunk(meta, [choice])
            elif message[0] == "done":
                done = True
                if meta.records:
                    stats = [{"index": i, "stats": out.stats.as_dict()} for i, out in enumerate(message[1])]
                    yield f"data: {json.dumps({'id': meta.id, 'object': 'decodelab.stats', 'choices': stats})}\n\n"
                if include_usage:
                    yield _chunk(meta, [], usage=_usage(meta, sum(len(o.token_ids) for o in message[1])))
                yield "data: [DONE]\n\n"
                return
            elif message[0] == "error":
                done = True
                _, payload = from_exception(message[1])
                yield f"data: {json.dumps(payload)}\n\n"
                yield "data: [DONE]\n\n"
                return
    finally:
        if not done:
            engine.cancel(job)


def _records(records: list[TokenRecord]) -> list[dict[str, Any]]:
    """Records as JSON: an infinite value (AWRS's log weight of a dead end) becomes null."""
    out = []
    for record in records:
        item = record.as_dict()
        item["extra"] = {k: (v if math.isfinite(v) else None) for k, v in item["extra"].items()}
        out.append(item)
    return out


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        return error_response(400, "the request body is not valid JSON", code="invalid_json")
    if kind == "extra_forbidden":
        return error_response(400, f"unknown option '{param}'", param=param, code="unknown_option")
    if kind == "missing":
        return error_response(400, f"missing required field '{param}'", param=param, code="missing_field")
    if not loc and kind in ("model_attributes_type", "dict_type"):
        return error_response(400, "the request body must be a JSON object (send Content-Type: application/json)",
                              code="invalid_json")
    message = str(first.get("msg", "invalid request"))
    # our own checks raise ValueError subclasses; pydantic prefixes their text
    message = message.removeprefix("Value error, ")
    code = "invalid_value"
    context_error = (first.get("ctx") or {}).get("error")
    if isinstance(context_error, DecodelabError):
        code = getattr(context_error, "code", None) or code
    where = f" ({param})" if param else ""
    return error_response(400, f"{message}{where}", param=param, code=code)


def _version() -> str:
    from .. import __version__

    return __version__


# ---------------------------------------------------------------------- ASGI guard
class _Guard:
    """Pure ASGI middleware: API key, request body size limit, request counting.

    Pure ASGI (not BaseHTTPMiddleware) so that streaming responses and client disconnects
    pass through untouched.
    """

    def __init__(self, app: Any, *, config: ServerConfig, requests: metrics.RequestCounter):
        self.app = app
        self.config = config
        self.requests = requests

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        status_seen = {"status": 500}

        async def counting_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status_seen["status"] = message["status"]
            await send(message)

        try:
            rejection = self._check_auth(scope, path)
            if rejection is None and scope.get("method") in ("POST", "PUT", "PATCH"):
                rejection, receive = await self._limit_body(scope, receive)
            if rejection is not None:
                await rejection(scope, receive, counting_send)
                return
            await self.app(scope, receive, counting_send)
        finally:
            self.requests.add(path, status_seen["status"])

    def _check_auth(self, scope: dict, path: str) -> JSONResponse | None:
        key = self.config.api_key
        if not key or not (path.startswith("/v1/") or path == "/metrics"):
            return None
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode()):
            return None
        return error_response(401, "missing or wrong API key (send 'Authorization: Bearer <key>')",
                              code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def _limit_body(self, scope: dict, receive: Any) -> tuple[JSONResponse | None, Any]:
        limit = self.config.max_body_bytes
        too_big = error_response(413, f"the request body exceeds {limit} bytes", code="request_too_large")
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return too_big, receive
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return error_response(400, "the client disconnected"), receive
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return too_big, receive
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: http.disconnect when the client leaves

        return None, replay
