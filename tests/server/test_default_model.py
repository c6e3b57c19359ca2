"""The server on the packaged default model (SmolLM2-135M-Instruct), driven by the openai client."""

from __future__ import annotations

import pytest

import decodelab as dl

openai = pytest.importorskip("openai")
from decodelab.server import BackgroundServer, ServerConfig, create_app  # noqa: E402


@pytest.mark.slow
def test_default_model_chat_completion_and_stream(smol):
    server = BackgroundServer(create_app({"smollm2-135m": smol}, ServerConfig(max_tokens_limit=64))).start()
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        out = client.chat.completions.create(model="smollm2-135m", messages=messages, max_tokens=12, temperature=0,
                                             logprobs=True, top_logprobs=3)
        text = out.choices[0].message.content
        assert "Paris" in text
        assert len(out.choices[0].logprobs.content) == out.usage.completion_tokens
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="smollm2-135m", messages=messages, max_tokens=12, temperature=0, stream=True) if c.choices)
        assert streamed == text
    finally:
        server.stop()
    # the server's worker is gone: the reference runs on the same model without a race
    assert dl.generate(smol, messages, max_new_tokens=12, temperature=0).text == text
