"""Request bodies of the OpenAI-compatible API, with decodelab's options as extra fields.

Field names of decodelab options are those of the Python API (`dl.generate(..., top_k=...)`).
Unknown fields are rejected (400), so a misspelt option never silently does nothing.
Sampler fields left out take the model's own generation config (greedy when it has none),
as in `dl.generate`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, field_validator

from ..decoding.detokenize import MAX_STOP_CHARS, MAX_STOP_STRINGS, validate_stop
from ..errors import InvalidOption, InvalidPrompt
from ..models.lm import CHAT_ROLES
from ..sampling.options import OptionSpec
from ..text import check_nested_text
from .errors import APIError

MAX_CONSTRAINT_CHARS = 100_000  # longest text option (regex, grammar): bounds compile time on the engine thread


def _utf8(value: Any, what: str = "text") -> Any:
    """Reject lone surrogates (valid JSON escapes, invalid text) before they reach a tokenizer,
    with the message Python and the CLI give."""
    return check_nested_text(value, what)


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


class _OpenAIOptions(_Strict):
    """The fields whose names and shapes come from OpenAI's API."""

    model: str | None = Field(None, max_length=200, description="a served model id (see /v1/models)")
    max_tokens: int | None = Field(None, ge=1, description="new tokens to generate at most")
    n: int = Field(1, ge=1, le=16, description="completions per prompt")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(None, description=f"up to {MAX_STOP_STRINGS} stop strings of at most "
                                                             f"{MAX_STOP_CHARS} characters")
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    user: str | None = Field(None, max_length=256)
    logit_bias: dict[str, float] | None = Field(None, description="token id (as a string) -> bias in [-100, 100]")
    records: bool = Field(False, description="include per-token records (logprob, entropy, top, source)")
    response_format: ResponseFormat | None = Field(
        None, description="OpenAI structured output: text, json_object, or json_schema (always enforced)")

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: Any) -> Any:
        validate_stop(value)  # the checks and messages of dl.generate
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None and len(value) > 1024:
            raise ValueError("at most 1024 logit_bias entries")
        return value


def _field(spec: OptionSpec) -> tuple[Any, Any]:
    """A pydantic field from an option spec: same name, bounds and help as in Python and the CLI."""
    bounds = {k: getattr(spec, k) for k in ("ge", "gt", "le", "lt") if getattr(spec, k) is not None}
    kind: Any = {"int": int, "float": float, "bool": bool, "str": str, "dict": dict[str, Any]}.get(
        spec.kind, spec.annotation if spec.annotation is not None else Any)
    if spec.kind == "choice":
        kind = Literal[spec.choices]  # type: ignore[valid-type]
    elif spec.kind == "int_list":
        kind = list[int] | str
    if spec.kind == "float":
        bounds["allow_inf_nan"] = False  # JSON's NaN/Infinity extensions: "finite number", not a range error
    if spec.kind == "str":
        bounds["max_length"] = spec.max_length or MAX_CONSTRAINT_CHARS
        bounds["min_length"] = 1
    return (kind | None, Field(None, description=spec.help, **bounds))


def _derived_fields() -> dict[str, tuple[Any, Any]]:
    """Sampler fields, the flat options of every registered method, and the nested method slots."""
    from ..decoding.method import flat_option_specs, slots
    from ..sampling.config import SamplingConfig
    from ..sampling.options import option_specs

    fields = {s.name: _field(s) for s in option_specs(SamplingConfig) if s.name != "logit_bias"}
    fields.update({s.name: _field(s) for s in flat_option_specs()})
    for slot in slots():
        if slot.flat:
            continue
        if slot.name_key is not None:
            fields[slot.selector] = (dict[str, int | float | bool | str | list[int]] | None, Field(
                None, description=f"{slot.help}: {{{slot.name_key}: a {slot.name} method, ...its options}} "
                                  "(see GET /v1/decodelab/methods)"))
        else:
            fields[slot.selector] = (str | None, Field(None, min_length=1, max_length=64,
                                                        description=f"{slot.help}: a method name"))
            fields[slot.options_keyword] = (dict[str, int | float | bool | str | list[int]] | None, Field(
                None, description=f"options of the {slot.name} method; model-valued ones name a served model"))
    return fields


class _MethodOptions(_OpenAIOptions):
    @field_validator("*", mode="before")
    @classmethod
    def _text(cls, value: Any, info: ValidationInfo) -> Any:
        """Reject lone surrogates in any text field (valid JSON escapes, invalid text)."""
        return _utf8(value, info.field_name or "text") if isinstance(value, (str, list, dict)) else value

    def constraint(self) -> dict[str, Any] | None:
        """The grammar options (regex/json_schema/grammar + method options), response_format included.

        `response_format` json_schema / json_object becomes `json_schema=`; "text" constrains nothing.
        Exactly one source of a constraint may be given.

        Example:
            >>> CompletionRequest(prompt="x", response_format={"type": "json_object"}).constraint()
            {'json_schema': {'type': 'object'}}
        """
        names = ("regex", "json_schema", "grammar", "constraint_method", "particles", "ess_threshold",
                 "token_healing")
        options = {k: getattr(self, k, None) for k in names if getattr(self, k, None) is not None}
        sources = [k for k in ("regex", "json_schema", "grammar") if k in options]
        fmt = self.response_format
        if fmt is not None and fmt.type != "text":
            if sources:
                raise APIError(400, f"response_format {fmt.type!r} and {', '.join(sources)} both constrain the "
                               "output; give one of them", param="response_format", code="conflicting_options")
            options["json_schema"] = fmt.json_schema.schema_ if fmt.type == "json_schema" else {"type": "object"}
            sources = ["json_schema"]
        if len(sources) > 1:
            raise APIError(400, f"give one of regex, json_schema or grammar, not {' and '.join(sources)}",
                           param=sources[0], code="conflicting_options")
        return options or None

    def method_options(self) -> dict[str, Any]:
        """Every decodelab option given, as `dl.generate` keywords (response_format translated)."""
        from ..decoding.method import flat_option_specs, selector_keywords
        from ..sampling.config import SamplingConfig

        names = set(SamplingConfig.option_names()) | {s.name for s in flat_option_specs()} | set(selector_keywords())
        out = {k: getattr(self, k) for k in names if getattr(self, k, None) is not None}
        out.update(self.constraint() or {})
        if self.logit_bias:
            try:
                out["logit_bias"] = {int(k): float(v) for k, v in self.logit_bias.items()}
            except ValueError:
                raise InvalidOption("logit_bias keys must be token ids") from None
        return out


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class _Completion(_Strict):
    """POST /v1/completions. A string prompt is raw text (no chat template unless `chat=true`)."""

    prompt: str | list[str] | TokenIds | list[TokenIds] = Field(
        ..., description="text, a list of texts, token ids, or a list of token-id lists")
    logprobs: int | None = Field(None, ge=0, le=20, description="top alternatives per token")
    echo: bool = False
    suffix: str | None = None
    chat: bool = Field(False, description="apply the model's chat template to a text prompt")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) == 0:
            raise ValueError("the prompt is empty")
        return _utf8(value, "the prompt")


class TextPart(_Strict):
    type: Literal["text"]
    text: str

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        return _utf8(value)


class ChatMessage(_Strict):
    role: str = Field(..., description=f"one of {', '.join(CHAT_ROLES)}")
    content: str | list[TextPart]
    name: str | None = Field(None, max_length=64)

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if value not in CHAT_ROLES:  # the message of dl.generate's check
            raise InvalidPrompt(f"role must be one of {', '.join(CHAT_ROLES)}, got {value[:40]!r}")
        return value

    @field_validator("content")
    @classmethod
    def _content(cls, value: Any) -> Any:
        return _utf8(value, "content")

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class _ChatCompletion(_Strict):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(..., min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    max_completion_tokens: int | None = Field(None, ge=1)



def build_request_models() -> tuple[type, type, type]:
    """(DecodelabOptions, CompletionRequest, ChatCompletionRequest) from the registry as it is now:
    a method registered before the app is created gets its request fields."""
    options = create_model("DecodelabOptions", __base__=_MethodOptions,
                           __doc__="Sampling and method options shared by both generation endpoints.",
                           **_derived_fields())
    completion = type("CompletionRequest", (_Completion, options), {
        "__doc__": _Completion.__doc__, "__module__": __name__})
    chat = type("ChatCompletionRequest", (_ChatCompletion, options), {
        "__doc__": _ChatCompletion.__doc__, "__module__": __name__})
    return options, completion, chat


DecodelabOptions, CompletionRequest, ChatCompletionRequest = build_request_models()


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
