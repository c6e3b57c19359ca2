"""Concurrency: dynamic batching keeps seeded results, the queue is bounded, clients can leave,
time limits hold, and the API key guards the API."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

import decodelab as dl

from .conftest import start, tiny_model

openai = pytest.importorskip("openai")
from decodelab.server import ServerConfig  # noqa: E402

PROMPTS = ["a", "the quick brown fox", "hello there", "xy", "one two three four five six", "q"]


def _metrics(server) -> dict[str, float]:
    samples = {}
    for line in httpx.get(server.url + "/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def _wait_for(condition, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def _post_in_thread(url: str, body: dict, results: dict, key) -> threading.Thread:
    def run() -> None:
        response = httpx.post(url, json=body, timeout=60)
        results[key] = (response.status_code, response.json())

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_batched_requests_match_single_requests():
    """Requests queued together run as one left-padded batch, and each still gets exactly the
    output it gets alone (its own seed streams, not the batch's row streams)."""
    ref = tiny_model()
    server = start(ServerConfig(max_batch=16, batch_wait=0.02))
    engine = server.app.state.engine
    try:
        engine.pause()
        results: dict = {}
        bodies = [{"prompt": p, "max_tokens": 12, "temperature": 1.0, "seed": 100 + i, "n": 2 if i == 2 else 1}
                  for i, p in enumerate(PROMPTS)]
        threads = [_post_in_thread(server.url + "/v1/completions", b, results, i) for i, b in enumerate(bodies)]
        _wait_for(lambda: engine.queue_length == len(bodies))
        engine.resume()
        for t in threads:
            t.join()
        metrics = _metrics(server)
    finally:
        server.stop()
    assert metrics["decodelab_batches_total"] == 1  # one batch ...
    assert metrics["decodelab_batch_rows_max"] == len(bodies) + 1  # ... of every row
    for i, body in enumerate(bodies):
        status, out = results[i]
        assert status == 200, out
        expected = dl.generate(ref, [body["prompt"]] * body["n"], chat=False, max_new_tokens=12, temperature=1.0,
                               seed=body["seed"])
        assert [c["text"] for c in out["choices"]] == [e.text for e in expected]


def test_row_streams_differ_so_the_batch_test_has_power():
    """Negative control: without per-job generators, a request at row i of a shared batch
    would draw the stream (seed, i) and its text would change."""
    ref = tiny_model()
    together = dl.generate(ref, PROMPTS[:4], chat=False, max_new_tokens=12, temperature=1.0, seed=100)
    alone = [dl.generate(ref, p, chat=False, max_new_tokens=12, temperature=1.0, seed=100).text for p in PROMPTS[:4]]
    assert together[0].text == alone[0]
    assert [o.text for o in together[1:]] != alone[1:]


def test_incompatible_requests_are_not_mixed():
    server = start(ServerConfig(max_batch=16, batch_wait=0.02))
    engine = server.app.state.engine
    try:
        engine.pause()
        results: dict = {}
        bodies = [{"prompt": "ab", "max_tokens": 5, "temperature": t, "seed": 1} for t in (0.5, 1.0, 0.5)]
        threads = [_post_in_thread(server.url + "/v1/completions", b, results, i) for i, b in enumerate(bodies)]
        _wait_for(lambda: engine.queue_length == 3)
        engine.resume()
        for t in threads:
            t.join()
        metrics = _metrics(server)
    finally:
        server.stop()
    assert all(results[i][0] == 200 for i in range(3))
    assert metrics["decodelab_batches_total"] == 2  # the two temperature-0.5 requests together
    assert results[0][1]["choices"][0]["text"] == results[2][1]["choices"][0]["text"]


def test_full_queue_returns_429_and_queued_requests_finish():
    server = start(ServerConfig(queue_size=2))
    engine = server.app.state.engine
    try:
        engine.pause()
        results: dict = {}
        threads = [_post_in_thread(server.url + "/v1/completions", {"prompt": "ab", "max_tokens": 3}, results, i)
                   for i in range(2)]
        _wait_for(lambda: engine.queue_length == 2)
        rejected = httpx.post(server.url + "/v1/completions", json={"prompt": "ab", "max_tokens": 3}, timeout=30)
        assert rejected.status_code == 429
        assert rejected.json()["error"]["type"] == "rate_limit_error"
        assert rejected.headers["retry-after"] == "1"
        engine.resume()
        for t in threads:
            t.join()
        assert [results[i][0] for i in range(2)] == [200, 200]
    finally:
        server.stop()


def test_request_times_out_in_queue():
    server = start(ServerConfig(timeout=0.3))
    engine = server.app.state.engine
    try:
        engine.pause()
        results: dict = {}
        thread = _post_in_thread(server.url + "/v1/completions", {"prompt": "ab", "max_tokens": 3}, results, 0)
        _wait_for(lambda: engine.queue_length == 1)
        time.sleep(0.5)  # past the request's deadline (not a timing assertion: the deadline is passed for sure)
        engine.resume()
        thread.join()
        status, body = results[0]
        assert status == 503 and body["error"]["code"] == "queue_timeout"
        # the server keeps serving
        assert httpx.post(server.url + "/v1/completions", json={"prompt": "ab", "max_tokens": 3}).status_code == 200
    finally:
        server.stop()


def test_disconnect_while_queued_cancels_the_job():
    server = start()
    engine = server.app.state.engine
    try:
        engine.pause()
        # A raw socket: an HTTP client would block waiting for headers that never come.
        body = json.dumps({"prompt": "ab", "max_tokens": 50, "stream": True}).encode()
        with socket.create_connection((server.host, server.port)) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            _wait_for(lambda: engine.queue_length == 1)
        _wait_for(lambda: engine.queue_length == 0)  # the handler noticed and withdrew the job
        engine.resume()
        time.sleep(0.2)
        metrics = _metrics(server)
        assert metrics["decodelab_generated_tokens_total"] == 0
        assert metrics["decodelab_batches_total"] == 0
    finally:
        server.stop()


def test_disconnect_mid_stream_stops_generation():
    slow = dl.load("tiny-random", vocab_size=64, hidden_size=256, num_layers=6, context_length=1024)
    server = start(ServerConfig(max_tokens_limit=800), **{"slow": slow})
    try:
        body = {"prompt": "ab", "max_tokens": 800, "temperature": 0, "stream": True, "logit_bias": {"0": -100}}
        with httpx.Client(timeout=60) as http:
            with http.stream("POST", server.url + "/v1/completions", json=body) as response:
                lines = response.iter_lines()
                first = next(line for line in lines if line.startswith("data: "))
                assert json.loads(first[6:])["choices"]
        _wait_for(lambda: _metrics(server)["decodelab_rows_cancelled_total"] == 1)
        _wait_for(lambda: _metrics(server)["decodelab_batches_total"] == 1)
        assert _metrics(server)["decodelab_generated_tokens_total"] < 800
        # the engine is free again
        ok = httpx.post(server.url + "/v1/completions", json={"prompt": "ab", "max_tokens": 2}, timeout=60)
        assert ok.status_code == 200
    finally:
        server.stop()


def test_time_limit_cuts_a_long_generation():
    slow = dl.load("tiny-random", vocab_size=64, hidden_size=256, num_layers=6, context_length=1024)
    server = start(ServerConfig(max_tokens_limit=800, timeout=1.0), **{"slow": slow})
    try:
        out = httpx.post(server.url + "/v1/completions", timeout=60, json={
            "prompt": "ab", "max_tokens": 800, "temperature": 0, "logit_bias": {"0": -100}}).json()
        assert out["choices"][0]["finish_reason"] == "timeout"  # cut for time, not for its token budget
        assert out["usage"]["completion_tokens"] < 800
        assert _metrics(server)["decodelab_rows_timed_out_total"] == 1
    finally:
        server.stop()


def test_api_key_guards_the_api_but_not_health_or_page():
    server = start(ServerConfig(api_key="sekret"))
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sekret"}):
            response = httpx.get(server.url + "/v1/models", headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(server.url + "/metrics").status_code == 401
        assert httpx.post(server.url + "/v1/completions", json={"prompt": "x"}).status_code == 401
        assert httpx.get(server.url + "/health").status_code == 200
        assert httpx.get(server.url + "/").status_code == 200
        good = openai.OpenAI(base_url=server.url + "/v1", api_key="sekret", max_retries=0)
        assert good.completions.create(model="tiny-random", prompt="ab", max_tokens=2).choices
        bad = openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    finally:
        server.stop()


@pytest.mark.parametrize("continuous", [True, False])
def test_request_joins_the_running_batch(continuous):
    """Continuous batching: a request that arrives while a compatible batch runs joins it at the
    next step (one batch in all) and still gets exactly the output it gets alone; with continuous
    batching off it waits for the batch to end (two batches)."""
    ref = tiny_model()
    server = start(ServerConfig(max_batch=16, batch_wait=0.0, continuous_batching=continuous))
    engine = server.app.state.engine
    common = {"max_tokens": 160, "temperature": 1.0, "logit_bias": {"0": -100}}  # no EOS: a long first request
    try:
        results: dict = {}
        first = _post_in_thread(server.url + "/v1/completions", {"prompt": "the cat sat", "seed": 1, **common},
                                results, "first")
        _wait_for(lambda: engine.stats.active_rows > 0)
        second = _post_in_thread(server.url + "/v1/completions", {"prompt": "a dog ran", "seed": 2, **common},
                                 results, "second")
        first.join()
        second.join()
        metrics = _metrics(server)
    finally:
        server.stop()
    assert results["first"][0] == results["second"][0] == 200
    assert metrics["decodelab_batches_total"] == (1 if continuous else 2)
    assert metrics["decodelab_jobs_joined_total"] == (1 if continuous else 0)
    for key, prompt, seed in (("first", "the cat sat", 1), ("second", "a dog ran", 2)):
        alone = dl.generate(ref, prompt, chat=False, max_new_tokens=160, temperature=1.0, seed=seed,
                            logit_bias={0: -100})
        assert results[key][1]["choices"][0]["text"] == alone.text
