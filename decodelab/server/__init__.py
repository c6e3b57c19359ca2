"""OpenAI-compatible HTTP server (FastAPI + uvicorn) and the token viewer page.

The server's dependencies are the optional group `server`; names here import lazily so that
`decodelab.server.cli` (which the main CLI imports) works without them installed.

Example:
    >>> import decodelab as dl
    >>> from decodelab.server import create_app, BackgroundServer
    >>> app = create_app({"tiny-random": dl.load("tiny-random", vocab_size=64)})  # doctest: +SKIP
    >>> with BackgroundServer(app) as server:  # doctest: +SKIP
    ...     print(server.url)   # point an OpenAI client at server.url + "/v1"
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_NAMES = {
    "ServerConfig": ".app", "create_app": ".app", "Engine": ".engine", "Job": ".engine", "QueueFull": ".engine",
    "BackgroundServer": ".runner", "free_port": ".runner", "serve": ".runner",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(import_module(_NAMES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
