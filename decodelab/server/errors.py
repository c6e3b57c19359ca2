"""OpenAI-style error bodies: `{"error": {"message", "type", "param", "code"}}`.

Every bad request gets a 4xx with this body, whatever raised it: request validation (pydantic),
a `decodelab.errors.DecodelabError` (its `http_status`), or a server limit.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from ..errors import DecodelabError, ModelNotFound, PromptTooLong
from ..text import one_line

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class APIError(Exception):
    """An error the HTTP layer raises itself (auth, limits, unsupported fields)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": one_line(message), "type": kind, "param": param and one_line(param), "code": code}}


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param=param, code=code), status_code=status, headers=headers)


def from_exception(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """(status, body) for any exception; unknown exceptions are 500 with a generic message."""
    if isinstance(exc, APIError):
        return exc.status, error_body(exc.status, exc.message, param=exc.param, code=exc.code)
    if isinstance(exc, DecodelabError):
        status = int(getattr(exc, "http_status", 400))
        code = getattr(exc, "code", None) or _code(exc)
        param = getattr(exc, "param", None) or (
            "model" if isinstance(exc, ModelNotFound) else ("prompt" if isinstance(exc, PromptTooLong) else None))
        return status, error_body(status, str(exc), param=param, code=code)
    return 500, error_body(500, f"internal error ({type(exc).__name__})", code="internal_error")


def _code(exc: DecodelabError) -> str:
    # CamelCase class name -> snake_case code: ModelNotFound -> model_not_found.
    name = type(exc).__name__
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))
