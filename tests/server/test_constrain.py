"""Constrained generation over HTTP (regex / json_schema / grammar fields, `response_format`),
driven by the official openai client on tiny-random. JSON objects need braces and quotes, which
tiny-random's character vocabulary lacks: those tests run on SmolLM2 (test_constrain_smollm2.py)."""

from __future__ import annotations

import json
import re
import threading

import httpx
import pytest

import decodelab as dl

from .conftest import start, tiny_model

openai = pytest.importorskip("openai")
from decodelab.server import ServerConfig  # noqa: E402
from decodelab.server.engine import Job, batch_key, check_request  # noqa: E402

REGEX = "[a-c]{2,4}x"
NO_EOS = {"0": -100}  # tiny-random's EOS is id 0: unconstrained texts run to max_tokens


def _extra(choice) -> dict:
    return choice.model_dump()


@pytest.mark.parametrize("method", ["mask", "awrs", "smc"])
def test_regex_field_fullmatches_and_equals_generate(client, ref_lm, method):
    options = {"regex": REGEX} if method == "mask" else {"regex": REGEX, "constraint_method": method}
    if method == "smc":
        options["particles"] = 4
    out = client.completions.create(model="tiny-random", prompt="ab", max_tokens=12, temperature=1.0, seed=5,
                                    extra_body=options)
    ref = dl.generate(ref_lm, "ab", chat=False, max_new_tokens=12, temperature=1.0, seed=5, **options)
    choice = _extra(out.choices[0])
    assert re.fullmatch(REGEX, choice["text"])
    assert choice["text"] == ref.text
    assert choice["finish_reason"] == ref.finish_reason == "stop"
    assert choice["constraint_satisfied"] is True
    assert out.usage.completion_tokens == len(ref.token_ids)
    if method == "mask":
        assert "log_weight" not in choice and "log_marginal_likelihood" not in choice
    else:
        assert choice["log_weight"] == pytest.approx(ref.log_weight)
    if method == "smc":
        assert choice["log_marginal_likelihood"] == pytest.approx(ref.log_marginal_likelihood)
        assert [p["text"] for p in choice["particles"]] == [p["text"] for p in ref.particles]


def test_unconstrained_output_does_not_match_so_the_regex_test_has_power(client):
    # Negative control: the same request without the field writes text outside the language.
    out = client.completions.create(model="tiny-random", prompt="ab", max_tokens=12, temperature=1.0, seed=5,
                                    logit_bias=NO_EOS)
    choice = _extra(out.choices[0])
    assert not re.fullmatch(REGEX, choice["text"])
    assert "constraint_satisfied" not in choice


def test_chat_regex_and_text_response_format(client, ref_lm):
    messages = [{"role": "user", "content": "Say yes or no."}]
    out = client.chat.completions.create(model="tiny-random", messages=messages, max_tokens=8, temperature=0.8,
                                         seed=3, response_format={"type": "text"}, extra_body={"regex": "(yes|no)"})
    ref = dl.generate(ref_lm, messages, max_new_tokens=8, temperature=0.8, seed=3, regex="(yes|no)")
    assert out.choices[0].message.content == ref.text
    assert ref.text in ("yes", "no")
    assert _extra(out.choices[0])["constraint_satisfied"] is True


def test_json_schema_field_on_a_scalar_schema(client):
    # tiny-random can write digits: an integer schema is JSON it can produce
    schema = {"type": "integer", "minimum": 10, "maximum": 7000}
    for seed in range(3):
        out = client.completions.create(model="tiny-random", prompt="n", max_tokens=8, temperature=1.0, seed=seed,
                                        extra_body={"json_schema": schema})
        value = json.loads(out.choices[0].text)
        assert isinstance(value, int) and 10 <= value <= 7000
    # the schema may also be sent as JSON text, as the Python API takes it
    text = client.completions.create(model="tiny-random", prompt="n", max_tokens=8, temperature=1.0, seed=0,
                                     extra_body={"json_schema": json.dumps(schema)}).choices[0].text
    as_dict = client.completions.create(model="tiny-random", prompt="n", max_tokens=8, temperature=1.0, seed=0,
                                        extra_body={"json_schema": schema}).choices[0].text
    assert text == as_dict


def test_json_schema_response_format_on_completions(client, ref_lm):
    schema = {"type": "integer", "maximum": 500}
    out = client.completions.create(model="tiny-random", prompt="n", max_tokens=6, temperature=1.0, seed=4,
                                    extra_body={"response_format": {"type": "json_schema", "json_schema": {
                                        "name": "number", "schema": schema, "strict": True}}})
    ref = dl.generate(ref_lm, "n", chat=False, max_new_tokens=6, temperature=1.0, seed=4, json_schema=schema)
    assert out.choices[0].text == ref.text
    assert json.loads(out.choices[0].text) <= 500


def test_token_healing_matches_generate_and_streams_the_same_text(client, ref_lm):
    options = {"regex": REGEX, "token_healing": True}
    full = client.completions.create(model="tiny-random", prompt="ab", max_tokens=10, temperature=1.0, seed=2,
                                     extra_body=options)
    ref = dl.generate(ref_lm, "ab", chat=False, max_new_tokens=10, temperature=1.0, seed=2, **options)
    assert full.choices[0].text == ref.text
    # the healed token ("b") is generated again but belongs to the prompt: not in the text
    assert ref.token_ids[0] == ref_lm.encode("b", chat=False)[0]
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny-random", prompt="ab", max_tokens=10, temperature=1.0, seed=2, stream=True, extra_body=options)
        if c.choices)
    assert streamed == full.choices[0].text


@pytest.mark.parametrize("method", ["mask", "awrs", "smc"])
def test_constrained_stream_concatenates_to_the_full_response(client, method):
    options = {"regex": REGEX, "constraint_method": method}
    if method == "smc":
        options["particles"] = 2
    args = dict(model="tiny-random", prompt="ab", max_tokens=12, temperature=1.0, seed=9, n=2, extra_body=options)
    full = client.completions.create(**args)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **args))
    texts, last = ["", ""], [None, None]
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            if choice.finish_reason is not None:
                last[choice.index] = _extra(choice)
    assert texts == [c.text for c in full.choices]
    assert all(re.fullmatch(REGEX, t) for t in texts)
    if method != "smc":
        assert len(chunks) > 4  # token by token
    for index, choice in enumerate(full.choices):
        expected = _extra(choice)
        # the chunk with the finish reason carries the constraint fields
        assert last[index]["finish_reason"] == expected["finish_reason"]
        for name in ("constraint_satisfied", "log_weight", "log_marginal_likelihood"):
            assert last[index].get(name) == expected.get(name)
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_chat_stream_with_regex(client):
    messages = [{"role": "user", "content": "Spell it."}]
    args = dict(model="tiny-random", messages=messages, max_tokens=12, temperature=1.0, seed=1,
                extra_body={"regex": REGEX})
    full = client.chat.completions.create(**args)
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **args)
                       if c.choices)
    assert streamed == full.choices[0].message.content
    assert re.fullmatch(REGEX, streamed)


def test_records_of_awrs_carry_weights_as_json(client):
    out = client.completions.create(model="tiny-random", prompt="ab", max_tokens=12, temperature=1.0, seed=3,
                                    extra_body={"regex": REGEX, "constraint_method": "awrs", "records": True})
    choice = _extra(out.choices[0])
    weights = [r["extra"]["log_weight"] for r in choice["records"]]
    assert len(weights) == len(choice["text"])  # one character per token on tiny-random
    assert sum(weights) == pytest.approx(choice["log_weight"])
    assert choice["stats"]["constraint_checks"] >= len(weights)


def test_a_constraint_that_cannot_finish_is_marked(client):
    out = client.completions.create(model="tiny-random", prompt="ab", max_tokens=3, temperature=1.0, seed=0,
                                    extra_body={"regex": "[a-z]{10}"})
    choice = _extra(out.choices[0])
    assert choice["finish_reason"] == "length" and choice["constraint_satisfied"] is False
    smc = _extra(client.completions.create(model="tiny-random", prompt="ab", max_tokens=3, temperature=1.0, seed=0,
                                           extra_body={"regex": "[a-z]{10}", "particles": 2}).choices[0])
    assert smc["constraint_satisfied"] is False
    assert smc["log_marginal_likelihood"] is None  # log Z = -inf has no JSON number: null
    assert all(p["log_weight"] is None for p in smc["particles"])


# ---------------------------------------------------------------------------- bad input
def _post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=30)


def _assert_error(response: httpx.Response, param: str | None = None) -> dict:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        # the top-level field; pydantic adds the union member after it (json_schema.dict[str,any])
        assert (error["param"] or "").split(".")[0] == param
    return error


SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "integer"}}}


@pytest.mark.parametrize(("extra", "param", "code"), [
    ({"regex": "(a"}, None, "invalid_constraint"),
    ({"regex": ""}, "regex", None),
    ({"grammar": "start: undefined_rule"}, None, "invalid_constraint"),
    ({"json_schema": {"type": "foo"}}, None, "invalid_constraint"),
    ({"json_schema": '{"type": '}, None, "invalid_constraint"),
    ({"json_schema": [1, 2]}, "json_schema", None),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "foo"}}}},
     None, "invalid_constraint"),
    ({"response_format": {"type": "xml"}}, "response_format", None),
    ({"response_format": {"type": "json_schema"}}, "response_format", "missing_field"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "n"}}}, "response_format", "missing_field"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "bad name!", "schema": {}}}},
     "response_format", None),
    ({"response_format": {"type": "json_object"}}, None, "invalid_constraint"),  # tiny-random writes no "{"
    ({"regex": "a+", "grammar": 'start: "a"'}, "regex", "conflicting_options"),
    ({"regex": "a+", "json_schema": {"type": "integer"}}, "regex", "conflicting_options"),
    ({"response_format": SCHEMA_FORMAT, "json_schema": {"type": "integer"}}, "response_format",
     "conflicting_options"),
    ({"response_format": {"type": "json_object"}, "regex": "a+"}, "response_format", "conflicting_options"),
    ({"particles": 3}, "particles", "missing_constraint"),
    ({"constraint_method": "awrs"}, "constraint_method", "missing_constraint"),
    ({"token_healing": True}, "token_healing", "missing_constraint"),
    ({"regex": "a+", "constraint_method": "beam"}, "constraint_method", None),
    ({"regex": "a+", "constraint_method": "awrs", "particles": 3}, "particles", "conflicting_options"),
    ({"regex": "a+", "particles": 0}, "particles", None),
    ({"regex": "a+", "ess_threshold": 2}, "ess_threshold", None),
    ({"regex": "a+", "token_healing": "sometimes"}, "token_healing", None),
    ({"regex": "a+", "particles": 4, "temperature": 0}, None, "invalid_option"),
    ({"regex": "a+", "particles": 32}, "particles", None),  # 32 rows > max_rows_per_request
    ({"regex": "a+", "n": 4, "constraint_method": "smc"}, "particles", None),  # 4 x 8 default particles
    ({"regex": "a+", "constraint_method": "awrs", "speculative": "prompt-lookup"}, None, "invalid_option"),
    ({"regex": "a+", "watermark": {"key": "k"}}, None, "invalid_option"),
])
def test_bad_constraint_requests_get_400(server, extra, param, code):
    body = {"prompt": "ab", "max_tokens": 4, "temperature": 1.0, **extra}
    error = _assert_error(_post(server, "/v1/completions", body), param)
    if code is not None:
        assert error["code"] == code
    # the same fields on chat completions get the same answer
    chat = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 4, "temperature": 1.0, **extra}
    _assert_error(_post(server, "/v1/chat/completions", chat), param)
    assert _post(server, "/v1/completions", {"prompt": "ok", "max_tokens": 2}).status_code == 200


def test_invalid_constraint_is_a_typed_client_error_before_streaming(client):
    with pytest.raises(openai.BadRequestError) as info:
        list(client.completions.create(model="tiny-random", prompt="ab", max_tokens=4, stream=True,
                                       extra_body={"regex": "(a"}))
    assert info.value.body["code"] == "invalid_constraint"


# ---------------------------------------------------------------------------- batching
def _key(**constraint) -> str:
    options = {"temperature": 1.0, **constraint}
    job = Job(model="m", prompts=["x"], chat=False, n=1, seed=None, max_new_tokens=4, stop=(), top_logprobs=0,
              records=False, options=options, deadline=0.0, send=lambda m: None,
              alone=check_request(tiny_model(), options))
    return batch_key(job)


def test_batch_key_separates_constraint_settings():
    assert _key(regex="a+") == _key(regex="a+")
    assert _key(json_schema={"type": "object", "required": ["a"]}) == _key(json_schema='{"required": ["a"], "type": '
                                                                                     '"object"}')
    assert _key(regex="a+", constraint_method="mask") == _key(regex="a+")  # mask is the default
    distinct = {_key(), _key(regex="a+"), _key(regex="b+"), _key(regex="a+", constraint_method="awrs"),
                _key(regex="a+", token_healing=True), _key(grammar="a+"), _key(json_schema={"type": "integer"})}
    assert len(distinct) == 7
    assert _key(regex="a+", particles=2) != _key(regex="a+", particles=2)  # SMC runs alone


def test_constrained_requests_batch_only_with_the_same_constraint():
    """Queued together: the two requests with the same regex and method share a batch, each one
    still gets exactly its single-request output; other constraints and the plain request run apart."""
    ref = tiny_model()
    server = start(ServerConfig(max_batch=16, batch_wait=0.02))
    engine = server.app.state.engine
    bodies = [
        {"prompt": "ab", "regex": REGEX, "seed": 1},
        {"prompt": "the cat", "regex": REGEX, "seed": 2},
        {"prompt": "ab", "regex": "(to|ea)+", "seed": 1},
        {"prompt": "ab", "regex": REGEX, "constraint_method": "awrs", "seed": 1},
        {"prompt": "ab", "seed": 1, "logit_bias": NO_EOS},
    ]
    results: dict = {}
    try:
        engine.pause()
        threads = []
        for i, body in enumerate(bodies):
            body = {"max_tokens": 10, "temperature": 1.0, **body}
            bodies[i] = body

            def run(body=body, i=i) -> None:
                response = httpx.post(server.url + "/v1/completions", json=body, timeout=60)
                results[i] = (response.status_code, response.json())

            threads.append(threading.Thread(target=run))
            threads[-1].start()
        _wait(lambda: engine.queue_length == len(bodies))
        engine.resume()
        for t in threads:
            t.join()
        batches = engine.stats.batches
        max_rows = engine.stats.max_batch_rows_seen
    finally:
        server.stop()
    assert batches == 4 and max_rows == 2
    for i, body in enumerate(bodies):
        status, out = results[i]
        assert status == 200, out
        options = {k: v for k, v in body.items() if k in ("regex", "constraint_method")}
        bias = {int(k): v for k, v in body.get("logit_bias", {}).items()} or None
        expected = dl.generate(ref, body["prompt"], chat=False, max_new_tokens=10, temperature=1.0,
                               seed=body["seed"], logit_bias=bias, **options)
        assert out["choices"][0]["text"] == expected.text
        if "regex" in body:
            assert re.fullmatch(body["regex"], expected.text)


def _wait(condition, timeout: float = 20.0) -> None:
    import time

    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.02)


def test_time_limit_ends_a_constrained_stream_with_its_fields():
    slow = dl.load("tiny-random", vocab_size=64, hidden_size=256, num_layers=6, context_length=1024)
    server = start(ServerConfig(max_tokens_limit=800, timeout=1.0), **{"slow": slow})
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        chunks = list(client.completions.create(model="slow", prompt="ab", max_tokens=800, temperature=0, stream=True,
                                                logit_bias={"0": -100}, extra_body={"regex": "[a-z]+"}))
    finally:
        server.stop()
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    last = [c.choices[0].model_dump() for c in chunks if c.choices][-1]
    assert 0 < len(text) < 800 and re.fullmatch("[a-z]+", text)
    assert last["finish_reason"] == "timeout" and last["constraint_satisfied"] is True
