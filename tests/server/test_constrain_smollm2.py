"""`response_format` JSON on the packaged SmolLM2 (tiny-random cannot write braces or quotes),
driven by the openai client: outputs are JSON valid under the schema, streamed or not."""

from __future__ import annotations

import json

import pytest

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")
pydantic = pytest.importorskip("pydantic")
from decodelab.server import BackgroundServer, ServerConfig, create_app  # noqa: E402

pytestmark = pytest.mark.slow

CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "country": {"enum": ["France", "Spain", "Italy"]},
        "population": {"type": "integer", "minimum": 0, "maximum": 100_000_000},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["city", "country", "population", "tags"],
    "additionalProperties": False,
}
ASK = [{"role": "user", "content": "Describe the capital of France."}]


@pytest.fixture(scope="module")
def smol_client(smol):
    server = BackgroundServer(create_app({"smollm2-135m": smol}, ServerConfig(max_tokens_limit=128))).start()
    yield openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    server.stop()


def _schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 0.8, "seed": 3}])
def test_json_schema_response_format_is_valid_under_the_schema(smol_client, sampling):
    out = smol_client.chat.completions.create(model="smollm2-135m", messages=ASK, max_tokens=96,
                                              response_format=_schema_format(CITY), **sampling)
    choice = out.choices[0]
    jsonschema.validate(json.loads(choice.message.content), CITY)
    assert choice.finish_reason == "stop"
    assert choice.model_dump()["constraint_satisfied"] is True


def test_without_response_format_the_same_request_is_not_json(smol_client):
    # Negative control: the model does not answer in this schema by itself.
    out = smol_client.chat.completions.create(model="smollm2-135m", messages=ASK, max_tokens=96, temperature=0)
    with pytest.raises((json.JSONDecodeError, jsonschema.ValidationError)):
        jsonschema.validate(json.loads(out.choices[0].message.content), CITY)


def test_json_object_gives_an_object(smol_client):
    messages = [{"role": "user", "content": "Reply in JSON: what is the capital of France?"}]
    out = smol_client.chat.completions.create(model="smollm2-135m", messages=messages, max_tokens=64,
                                              temperature=0, response_format={"type": "json_object"})
    assert isinstance(json.loads(out.choices[0].message.content), dict)


def test_openai_parse_helper_gets_a_typed_object(smol_client):
    class City(pydantic.BaseModel):
        city: str = pydantic.Field(max_length=30)
        country: str = pydantic.Field(max_length=20)

    out = smol_client.chat.completions.parse(model="smollm2-135m", messages=ASK, max_tokens=64, temperature=0,
                                             response_format=City)
    parsed = out.choices[0].message.parsed
    assert isinstance(parsed, City) and parsed.city


def test_json_schema_stream_concatenates_to_the_full_response(smol_client):
    args = dict(model="smollm2-135m", messages=ASK, max_tokens=96, temperature=0.8, seed=5,
                response_format=_schema_format(CITY))
    full = smol_client.chat.completions.create(**args).choices[0].message.content
    chunks = list(smol_client.chat.completions.create(stream=True, **args))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 10 and streamed == full
    jsonschema.validate(json.loads(streamed), CITY)
    final = [c.choices[0].model_dump() for c in chunks if c.choices and c.choices[0].finish_reason]
    assert final[-1]["finish_reason"] == "stop" and final[-1]["constraint_satisfied"] is True


def test_json_schema_field_with_awrs_on_completions(smol_client):
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"],
              "additionalProperties": False}
    out = smol_client.completions.create(model="smollm2-135m", prompt="Is Paris in France? Answer: ", max_tokens=32,
                                         temperature=1.0, seed=2, extra_body={"json_schema": schema,
                                                                               "constraint_method": "awrs"})
    choice = out.choices[0].model_dump()
    jsonschema.validate(json.loads(choice["text"]), schema)
    assert choice["constraint_satisfied"] is True and isinstance(choice["log_weight"], float)
