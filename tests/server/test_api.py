"""The OpenAI-compatible API, driven by the official `openai` client against a live server."""

from __future__ import annotations

import json
import math

import httpx
import pytest

import decodelab as dl

openai = pytest.importorskip("openai")

MESSAGES = [{"role": "user", "content": "Name a colour."}]


def test_models_lists_only_served_models(client):
    assert [m.id for m in client.models.list().data] == ["tiny-random"]


def test_completion_matches_generate(client, ref_lm):
    out = client.completions.create(model="tiny-random", prompt="the cat", max_tokens=12, temperature=0.9, seed=7)
    ref = dl.generate(ref_lm, "the cat", chat=False, max_new_tokens=12, temperature=0.9, seed=7)
    assert out.object == "text_completion"
    assert out.choices[0].text == ref.text
    assert out.choices[0].finish_reason == ref.finish_reason
    assert out.usage.completion_tokens == len(ref.token_ids)
    assert out.usage.prompt_tokens == len(ref.prompt_token_ids)


def test_seed_changes_output_and_repeats(client):
    def text(seed: int) -> str:
        return client.completions.create(model="tiny-random", prompt="abc", max_tokens=16, temperature=1.0,
                                         seed=seed).choices[0].text

    assert text(1) == text(1)
    assert len({text(s) for s in range(1, 5)}) > 1  # the seed reaches the sampler


def test_chat_matches_generate(client, ref_lm):
    out = client.chat.completions.create(model="tiny-random", messages=MESSAGES, max_tokens=10, temperature=0.8, seed=2)
    ref = dl.generate(ref_lm, MESSAGES, max_new_tokens=10, temperature=0.8, seed=2)
    assert out.object == "chat.completion"
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == ref.text


def test_n_choices_draw_the_rows_of_a_batch(client, ref_lm):
    out = client.completions.create(model="tiny-random", prompt="xy", max_tokens=8, temperature=1.0, seed=11, n=3)
    refs = dl.generate(ref_lm, ["xy"] * 3, chat=False, max_new_tokens=8, temperature=1.0, seed=11)
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert [c.text for c in out.choices] == [r.text for r in refs]


def test_list_of_prompts_and_token_ids(client, ref_lm):
    out = client.completions.create(model="tiny-random", prompt=["ab", "cd"], max_tokens=5, temperature=0)
    refs = [dl.generate(ref_lm, p, chat=False, max_new_tokens=5, temperature=0).text for p in ("ab", "cd")]
    assert [c.text for c in out.choices] == refs
    ids = ref_lm.encode("ab", chat=False)
    by_ids = client.completions.create(model="tiny-random", prompt=ids, max_tokens=5, temperature=0)
    assert by_ids.choices[0].text == refs[0]


@pytest.mark.parametrize("kind", ["completion", "chat"])
def test_stream_concatenates_to_the_full_response(client, kind):
    args = dict(model="tiny-random", max_tokens=20, temperature=1.0, seed=5, n=2)
    if kind == "chat":
        full = client.chat.completions.create(messages=MESSAGES, **args)
        chunks = list(client.chat.completions.create(messages=MESSAGES, stream=True,
                                                     stream_options={"include_usage": True}, **args))
        pieces = lambda c: c.delta.content or ""  # noqa: E731
        expected = [c.message.content for c in full.choices]
    else:
        full = client.completions.create(prompt="hello", **args)
        chunks = list(client.completions.create(prompt="hello", stream=True, stream_options={"include_usage": True},
                                                **args))
        pieces = lambda c: c.text  # noqa: E731
        expected = [c.text for c in full.choices]
    texts = ["", ""]
    finish = [None, None]
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += pieces(choice)
            finish[choice.index] = choice.finish_reason or finish[choice.index]
    assert len(chunks) > 4  # it really streamed, token by token
    assert texts == expected
    assert finish == [c.finish_reason for c in full.choices]
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_completion_logprobs_are_the_records(client, ref_lm):
    out = client.completions.create(model="tiny-random", prompt="the dog", max_tokens=6, temperature=0.7, seed=3,
                                    logprobs=3)
    ref = dl.generate(ref_lm, "the dog", chat=False, max_new_tokens=6, temperature=0.7, seed=3, top_logprobs=3)
    lp = out.choices[0].logprobs
    assert lp.tokens == [r.text for r in ref.records]
    assert lp.token_logprobs == pytest.approx([r.logprob for r in ref.records], abs=1e-5)
    assert all(len(top) == 3 for top in lp.top_logprobs)
    first = ref.records[0]
    assert lp.top_logprobs[0] == pytest.approx({t: v for _, t, v in first.top}, abs=1e-5)


def test_chat_logprobs_shape_and_values(client, ref_lm):
    out = client.chat.completions.create(model="tiny-random", messages=MESSAGES, max_tokens=5, temperature=0,
                                         logprobs=True, top_logprobs=2)
    ref = dl.generate(ref_lm, MESSAGES, max_new_tokens=5, temperature=0, top_logprobs=2)
    content = out.choices[0].logprobs.content
    assert [c.token for c in content] == [r.text for r in ref.records]
    for entry, record in zip(content, ref.records):
        assert entry.logprob == pytest.approx(record.logprob, abs=1e-5)
        assert entry.bytes == list(record.text.encode())
        assert len(entry.top_logprobs) == 2
        # greedy: the chosen token is the most likely one
        assert entry.top_logprobs[0].token == entry.token


def test_records_and_stats_on_request(client):
    out = client.completions.create(model="tiny-random", prompt="ab", max_tokens=4, temperature=0,
                                    extra_body={"records": True})
    choice = out.choices[0].model_dump()
    records = choice["records"]
    assert len(records) == out.usage.completion_tokens
    assert set(records[0]) >= {"token_id", "text", "logprob", "entropy", "top", "source"}
    assert all(r["source"] == "target" for r in records)
    assert all(0 <= math.exp(r["logprob"]) <= 1 and r["entropy"] >= 0 for r in records)
    assert choice["stats"]["new_tokens"] == len(records)
    plain = client.completions.create(model="tiny-random", prompt="ab", max_tokens=4, temperature=0)
    assert "records" not in plain.choices[0].model_dump()


def test_decodelab_sampler_options_reach_the_sampler(client, ref_lm):
    # top_k=1 at temperature 1 is greedy; a +100 logit bias forces one token everywhere.
    topk = client.completions.create(model="tiny-random", prompt="qq", max_tokens=8, temperature=1.0, seed=9,
                                     extra_body={"top_k": 1})
    greedy = client.completions.create(model="tiny-random", prompt="qq", max_tokens=8, temperature=0)
    assert topk.choices[0].text == greedy.choices[0].text
    forced = ref_lm.encode("z", chat=False)[0]
    biased = client.completions.create(model="tiny-random", prompt="qq", max_tokens=6, temperature=1.0, seed=1,
                                       logit_bias={str(forced): 100})
    assert biased.choices[0].text == "z" * 6
    ref = dl.generate(ref_lm, "qq", chat=False, max_new_tokens=8, temperature=0.9, seed=4, min_p=0.1,
                      repetition_penalty=1.3, presence_penalty=0.5)
    out = client.completions.create(model="tiny-random", prompt="qq", max_tokens=8, temperature=0.9, seed=4,
                                    presence_penalty=0.5, extra_body={"min_p": 0.1, "repetition_penalty": 1.3})
    assert out.choices[0].text == ref.text


def test_stop_string_ends_the_text(client, ref_lm):
    free = dl.generate(ref_lm, "hello", chat=False, max_new_tokens=30, temperature=1.0, seed=8).text
    assert len(free) > 4
    stop = free[2:4]
    out = client.completions.create(model="tiny-random", prompt="hello", max_tokens=30, temperature=1.0, seed=8,
                                    stop=[stop])
    assert out.choices[0].text == free[: free.index(stop)]
    assert out.choices[0].finish_reason == "stop"


# ---------------------------------------------------------------------------- bad input
def _post(server, path: str, body, **kw) -> httpx.Response:
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return httpx.post(server.url + path, content=content, headers={"content-type": "application/json"}, timeout=30,
                      **kw)


def _assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    return error


@pytest.mark.parametrize(("body", "status", "param"), [
    ("{not json", 400, None),
    ({"prompt": "x", "model": "no-such-model"}, 404, "model"),
    ({"prompt": "x", "model": "../../etc/passwd"}, 404, "model"),
    ({"prompt": "x", "model": "/tmp"}, 404, "model"),
    ({"prompt": "x", "max_tokens": -1}, 400, "max_tokens"),
    ({"prompt": "x", "max_tokens": 10_000}, 400, "max_tokens"),
    ({"prompt": "x" * 2000}, 400, "prompt"),
    ({"prompt": "x", "frobnicate": 1}, 400, "frobnicate"),
    ({"prompt": "x", "temperature": -0.5}, 400, "temperature"),
    ({"prompt": "x", "top_p": 1.5}, 400, "top_p"),
    ({"prompt": "x", "logit_bias": {"999999": 1}}, 400, None),
    ({"prompt": "x", "logit_bias": {"abc": 1}}, 400, None),
    ({"prompt": "   "}, 400, None),
    ({"prompt": [], "max_tokens": 2}, 400, "prompt"),
    ({"prompt": [99999]}, 400, None),
    ({"prompt": "x", "speculative": "no-such-method"}, 400, None),
    ({"prompt": "x", "speculative_options": {"k": 3}}, 400, None),
    ({"max_tokens": 3}, 400, "prompt"),
])
def test_bad_completion_requests_get_openai_errors(server, body, status, param):
    _assert_openai_error(_post(server, "/v1/completions", body), status, param)
    # the server keeps serving
    ok = _post(server, "/v1/completions", {"prompt": "ok", "max_tokens": 2})
    assert ok.status_code == 200


@pytest.mark.parametrize(("body", "status"), [
    ({"messages": []}, 400),
    ({"messages": [{"role": "wizard", "content": "x"}]}, 400),
    ({"messages": [{"role": "user"}]}, 400),
    ({"messages": [{"role": "user", "content": "x"}], "tools": []}, 400),
    ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, 400),
    ({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}}, 400),
])
def test_bad_chat_requests_get_openai_errors(server, body, status):
    _assert_openai_error(_post(server, "/v1/chat/completions", body), status)


def test_openai_client_raises_typed_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="tiny-random", prompt="x", max_tokens=2, extra_body={"top_kk": 3})
    assert info.value.body["param"] == "top_kk"


def test_oversized_body_is_rejected(server):
    _assert_openai_error(_post(server, "/v1/completions", {"prompt": "x" * 1_100_000}), 413)


def test_health_and_metrics(server, client):
    client.completions.create(model="tiny-random", prompt="ab", max_tokens=3)
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["models"] == ["tiny-random"]
    text = httpx.get(server.url + "/metrics").text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['decodelab_requests_total{endpoint="/v1/completions",status="200"}'] >= 1
    for name in ("decodelab_queue_length", "decodelab_tokens_per_second", "decodelab_generated_tokens_total",
                 "decodelab_speculative_acceptance_rate", "decodelab_batches_total"):
        assert name in samples
    assert samples["decodelab_generated_tokens_total"] >= 3
    assert "# TYPE decodelab_requests_total counter" in text


def test_viewer_page_is_served(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "token viewer" in page.text
    assert httpx.get(server.url + "/static/viewer.js").status_code == 200
    assert httpx.get(server.url + "/static/../app.py").status_code == 404


def test_watermark_option_matches_python_api_and_is_detected(client, ref_lm):
    from decodelab.watermark import detect

    options = {"key": "server-key", "scheme": "exp", "n": 64}
    no_eos = {str(t): -100 for t in ref_lm.eos_token_ids}  # long enough texts to detect
    out = client.completions.create(model="tiny-random", prompt="ab", max_tokens=24, temperature=1.0, seed=3,
                                    logit_bias=no_eos, extra_body={"watermark": options})
    ref = dl.generate(ref_lm, "ab", chat=False, max_new_tokens=24, temperature=1.0, seed=3, watermark=options,
                      logit_bias={int(t): b for t, b in no_eos.items()})
    assert len(ref.token_ids) == 24
    assert out.choices[0].text == ref.text
    own = detect(ref_lm, [ref.token_ids], key="server-key", scheme="exp", n=64, resamples=200)[0]
    others = [detect(ref_lm, [ref.token_ids], key=f"other-{i}", scheme="exp", n=64, resamples=100)[0].p_value
              for i in range(9)]
    assert own.p_value <= 0.01
    assert sorted(others)[4] > 0.1  # under a wrong key p-values are uniform: the median is far from 0


def test_watermark_with_speculative_is_a_client_error(client):
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny-random", prompt="ab", max_tokens=4, temperature=1.0,
                                  extra_body={"watermark": {"key": "k"}, "speculative": "prompt-lookup"})
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny-random", prompt="ab", max_tokens=4, temperature=1.0,
                                  extra_body={"watermark": {"scheme": "exp"}})  # no key
