"""Request bodies of the OpenAI-compatible API, with decodelab's options as extra fields.

Field names of decodelab options are those of the Python API (`dl.generate(..., top_k=...)`).
Unknown fields are rejected (400), so a misspelt option never silently does nothing.
Sampler fields left out take the model's own generation config (greedy when it has none),
as in `dl.generate`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import InvalidOption
from .errors import APIError

NonEmptyText = Annotated[str, Field(min_length=1, max_length=1000)]
MAX_CONSTRAINT_CHARS = 100_000  # a regex, grammar or schema text; bounds compile time on the engine thread


def _utf8(value: Any) -> Any:
    """Reject lone surrogates (valid JSON escapes, invalid text) before they reach a tokenizer."""
    if isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, list):
        for item in value:
            _utf8(item)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool = False


class JSONSchemaFormat(_Strict):
    """OpenAI's `response_format.json_schema`: a named schema. `strict` is accepted and has no
    effect: the grammar always enforces the schema."""

    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = Field(None, max_length=10_000)
    schema_: dict[str, Any] = Field(..., alias="schema", description="the JSON schema the output must follow")
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ResponseFormatText(_Strict):
    type: Literal["text"]


class ResponseFormatJSONObject(_Strict):
    type: Literal["json_object"]


class ResponseFormatJSONSchema(_Strict):
    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


ResponseFormat = Annotated[ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema,
                           Field(discriminator="type")]


class DecodelabOptions(_Strict):
    """Sampling and method options shared by both generation endpoints."""

    model: str | None = Field(None, max_length=200, description="a served model id (see /v1/models)")
    max_tokens: int | None = Field(None, ge=1, description="new tokens to generate at most")
    temperature: float | None = Field(None, ge=0, description="0 means greedy decoding")
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=16, description="completions per prompt")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: NonEmptyText | list[NonEmptyText] | None = Field(None, description="up to 8 stop strings")
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    user: str | None = Field(None, max_length=256)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = Field(None, description="token id (as a string) -> bias in [-100, 100]")
    # decodelab options, named as in the Python API
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, lt=1)
    typical_p: float | None = Field(None, gt=0, le=1)
    epsilon_cutoff: float | None = Field(None, ge=0, lt=1)
    eta_cutoff: float | None = Field(None, ge=0, lt=1)
    repetition_penalty: float | None = Field(None, gt=0)
    speculative: str | None = Field(None, min_length=1, max_length=64,
                                    description="a speculative method name (decodelab.speculative.make)")
    speculative_options: dict[str, int | float | bool | str] | None = Field(
        None, description="keyword options of the speculative method; model-valued ones name a served model")
    watermark: dict[str, int | float | str] | None = Field(
        None, description="watermarked sampling: {key (required), scheme: exp|its|kgw, n, shift, gamma, delta}")
    records: bool = Field(False, description="include per-token records (logprob, entropy, top, source)")
    response_format: ResponseFormat | None = Field(
        None, description="OpenAI structured output: text, json_object, or json_schema (always enforced)")
    # constrained generation, named as in the Python API (see decodelab.constrain)
    regex: str | None = Field(None, min_length=1, max_length=MAX_CONSTRAINT_CHARS,
                              description="the output must fully match this regular expression")
    json_schema: dict[str, Any] | str | None = Field(
        None, description="the output must be JSON valid under this schema (an object or its JSON text)")
    grammar: str | None = Field(None, min_length=1, max_length=MAX_CONSTRAINT_CHARS,
                                description="the output must match this Lark grammar")
    constraint_method: Literal["mask", "awrs", "smc"] | None = Field(
        None, description="mask (default), awrs (rejection sampling with weights) or smc (particles)")
    particles: int | None = Field(None, ge=1, le=64, description="SMC particles (implies constraint_method=smc)")
    ess_threshold: float | None = Field(None, ge=0, le=1, description="SMC: resample when ESS < this x particles")
    token_healing: bool | None = Field(None, description="back up the last prompt token; the output starts "
                                                         "with its text")

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > 8:
            raise ValueError("at most 8 stop strings")
        return _utf8(value)

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None and len(value) > 1024:
            raise ValueError("at most 1024 logit_bias entries")
        return value

    @field_validator("regex", "grammar", "json_schema")
    @classmethod
    def _constraint_text(cls, value: Any) -> Any:
        if isinstance(value, str) and len(value) > MAX_CONSTRAINT_CHARS:
            raise ValueError(f"at most {MAX_CONSTRAINT_CHARS} characters")
        return _utf8(value)

    def constraint(self) -> dict[str, Any] | None:
        """The constraint options for `dl.generate` (regex/json_schema/grammar, method, ...), or None.

        `response_format` json_schema / json_object becomes `json_schema=`; "text" constrains nothing.
        Exactly one source of a constraint may be given.

        Example:
            >>> CompletionRequest(prompt="x", response_format={"type": "json_object"}).constraint()
            {'json_schema': {'type': 'object'}}
        """
        sources: dict[str, Any] = {k: getattr(self, k) for k in ("regex", "json_schema", "grammar")
                                   if getattr(self, k) is not None}
        fmt = self.response_format
        if fmt is not None and fmt.type != "text":
            if sources:
                raise APIError(400, f"response_format {fmt.type!r} and {', '.join(sources)} both constrain the "
                               "output; give one of them", param="response_format", code="conflicting_options")
            sources["json_schema"] = fmt.json_schema.schema_ if fmt.type == "json_schema" else {"type": "object"}
        if len(sources) > 1:
            raise APIError(400, f"give one of regex, json_schema or grammar, not {' and '.join(sources)}",
                           param=next(iter(sources)), code="conflicting_options")
        options = {"constraint_method": self.constraint_method, "particles": self.particles,
                   "ess_threshold": self.ess_threshold, "token_healing": self.token_healing}
        options = {k: v for k, v in options.items() if v is not None}
        if not sources:
            given = [k for k, v in options.items() if v is not False]
            if given:
                raise APIError(400, f"{', '.join(given)} need(s) regex, json_schema, grammar or a JSON "
                               "response_format", param=given[0], code="missing_constraint")
            return None
        if self.particles is not None and self.constraint_method not in (None, "smc"):
            raise APIError(400, "particles applies to constraint_method 'smc'", param="particles",
                           code="conflicting_options")
        return {**sources, **options}

    def sampler(self) -> dict[str, Any]:
        """The options `SamplingConfig` takes; None means 'not given'."""
        bias = None
        if self.logit_bias:
            try:
                bias = {int(k): float(v) for k, v in self.logit_bias.items()}
            except ValueError:
                raise InvalidOption("logit_bias keys must be token ids") from None
        return {
            "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k, "min_p": self.min_p,
            "typical_p": self.typical_p, "epsilon_cutoff": self.epsilon_cutoff, "eta_cutoff": self.eta_cutoff,
            "repetition_penalty": self.repetition_penalty, "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty, "logit_bias": bias,
        }


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class CompletionRequest(DecodelabOptions):
    """POST /v1/completions. A string prompt is raw text (no chat template unless `chat=true`)."""

    prompt: str | list[str] | TokenIds | list[TokenIds] = Field(
        ..., description="text, a list of texts, token ids, or a list of token-id lists")
    logprobs: int | None = Field(None, ge=0, le=20, description="top alternatives per token")
    echo: bool = False
    best_of: int | None = Field(None, ge=1, le=16)
    suffix: str | None = None
    chat: bool = Field(False, description="apply the model's chat template to a text prompt")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) == 0:
            raise ValueError("the prompt is empty")
        return _utf8(value)


class TextPart(_Strict):
    type: Literal["text"]
    text: str

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        return _utf8(value)


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = Field(None, max_length=64)

    @field_validator("content")
    @classmethod
    def _content(cls, value: Any) -> Any:
        return _utf8(value)

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatCompletionRequest(DecodelabOptions):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(..., min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    max_completion_tokens: int | None = Field(None, ge=1)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The OpenAI-style error body every 4xx/5xx carries."""

    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses."""
    text = {400: "invalid request", 401: "missing or wrong API key", 404: "unknown model",
            413: "request body too large", 429: "request queue full", 499: "client closed the request",
            503: "timed out in the queue or shutting down"}
    return {s: {"model": ErrorResponse, "description": text[s]} for s in statuses}
