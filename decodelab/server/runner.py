"""Run the app with uvicorn: in the foreground (`serve`) or on a background thread (tests, load test)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (for tests on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _config(app: Any, host: str, port: int, log_level: str) -> uvicorn.Config:
    # h11 and asyncio loop: pure Python, the same everywhere; backlog sized for load tests.
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http="h11", loop="asyncio",
                          lifespan="on", backlog=2048, timeout_keep_alive=30)


def serve(app: Any, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info") -> None:
    """Serve in the foreground until interrupted."""
    uvicorn.Server(_config(app, host, port, log_level)).run()


class BackgroundServer:
    """uvicorn on a daemon thread; a context manager that waits until the server accepts requests.

    Example:
        >>> import decodelab as dl
        >>> from decodelab.server import create_app
        >>> with BackgroundServer(create_app({"tiny-random": dl.load("tiny-random")})) as server:  # doctest: +SKIP
        ...     print(server.url)
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int | None = None, *, log_level: str = "warning"):
        self.app = app
        self.host = host
        self.port = port or free_port(host)
        self.server = uvicorn.Server(_config(app, self.host, self.port, log_level))
        self.thread = threading.Thread(target=self.server.run, name="decodelab-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self.thread.start()
        end = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > end:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
