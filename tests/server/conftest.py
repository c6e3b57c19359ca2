"""Fixtures for server tests: live servers on loopback (uvicorn on a thread) over tiny-random models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import decodelab as dl

pytest.importorskip("fastapi", reason="the server's optional dependencies (group 'server') are not installed")

from decodelab.server import BackgroundServer, ServerConfig, create_app  # noqa: E402

TINY = {"vocab_size": 64, "seed": 3, "init_std": 0.2}  # peaked enough that seeds matter visibly


def tiny_model() -> dl.LM:
    """A fresh tiny-random instance (same weights every call): tests compute references on their
    own instance, never on the one the server's worker thread is using."""
    return dl.load("tiny-random", **TINY)


def start(config: ServerConfig | None = None, **models: dl.LM) -> BackgroundServer:
    models = models or {"tiny-random": tiny_model()}
    return BackgroundServer(create_app(models, config or ServerConfig(max_tokens_limit=400, timeout=60))).start()


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    srv = start(ServerConfig(max_tokens_limit=400, timeout=60, max_batch=8, batch_wait=0.02))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def ref_lm() -> dl.LM:
    return tiny_model()


@pytest.fixture()
def client(server: BackgroundServer):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
