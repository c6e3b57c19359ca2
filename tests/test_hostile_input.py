"""Hostile input: every bad value gets a typed error (Python), a one-line error and exit 2 (CLI) or a
4xx JSON error (HTTP), quickly, and the server keeps serving.

Two parts: the cases of issue 21, one test each (each failed before the fix), and a
property-based suite that throws generated hostile values at every registered option (and the
sampler and generation options) on every surface.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import time

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from surfaces import cli_args, cli_value, python_keywords, server_body

import decodelab as dl
from decodelab.cli import main as cli_main
from decodelab.decoding.generate import GenerationOptions
from decodelab.decoding.method import Method
from decodelab.sampling.config import SamplingConfig
from decodelab.sampling.options import option_specs

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from decodelab.server import ServerConfig, create_app  # noqa: E402

CALL_SECONDS = 30.0  # no single hostile call may take longer (a 2-core machine shared with other work)
CASES = {"python": 0, "cli": 0, "http": 0}  # reported at the end of the run (conftest)


@pytest.fixture(scope="module")
def lm():
    return dl.load("tiny-random")  # what the CLI's --model tiny-random loads


START_RSS: list[int] = []


@pytest.fixture(scope="module")
def client(lm):
    START_RSS.append(psutil.Process().memory_info().rss)
    app = create_app({"tiny-random": lm, "draft": dl.load("tiny-random")},
                     ServerConfig(max_rows_per_request=64, max_batch=64, max_tokens_limit=64, timeout=60))
    with TestClient(app) as c:
        yield c


def _error(response) -> str:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    return response.json()["error"]["message"]


def _cli_error(capsys, argv: list[str]) -> str:
    try:
        code = cli_main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    return err


GEN = ["generate", "--model", "tiny-random", "--max-new-tokens", "2"]


# ---------------------------------------------------------------- issue 21, case by case
def test_lone_surrogates_are_typed_errors_everywhere(lm, client, capsys):
    with pytest.raises(dl.InvalidPrompt, match="not valid Unicode"):
        dl.generate(lm, "hi \ud800", max_new_tokens=2)
    with pytest.raises(dl.InvalidPrompt, match="message 0 content is not valid Unicode"):
        dl.generate(lm, [{"role": "user", "content": "a\udc80"}], max_new_tokens=2)
    with pytest.raises(dl.InvalidOption, match="regex is not valid Unicode"):
        dl.generate(lm, "hi", regex="a\ud800", max_new_tokens=2)
    with pytest.raises(dl.InvalidOption, match="not valid Unicode"):
        dl.generate(lm, "hi", json_schema={"type": "object", "properties": {"\ud800": {"type": "string"}}})
    # the same text from the command line (Python decodes non-UTF-8 argv bytes to lone surrogates)
    assert "not valid Unicode" in _cli_error(capsys, GEN + ["a\udcffb"])
    body = '{"prompt": "a\\ud800", "max_tokens": 2}'
    r = client.post("/v1/completions", content=body, headers={"content-type": "application/json"})
    assert "not valid Unicode" in _error(r)


def test_non_utf8_bytes_from_argv_stdin_and_chat_are_one_line_errors(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    script = "import sys; from decodelab.cli import main; sys.exit(main())"
    run = [sys.executable, "-c", script]
    argv = subprocess.run(run + ["generate", "--model", "tiny-random", "--max-new-tokens", "2", b"a\xffb"],
                          capture_output=True, env=env, timeout=300)
    stdin = subprocess.run(run + ["generate", "--model", "tiny-random", "--max-new-tokens", "2", "-"],
                           input=b"a\xffb", capture_output=True, env=env, timeout=300)
    chat = subprocess.run(run + ["chat", "--model", "tiny-random", "--max-new-tokens", "2"],
                          input=b"a\xffb\nhello\n", capture_output=True, env=env, timeout=300)
    for done in (argv, stdin):
        err = done.stderr.decode()
        assert done.returncode == 2 and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error:"), err
        assert "UTF-8" in err or "Unicode" in err, err
    err = chat.stderr.decode()
    # the bad line is reported, the next line is answered
    assert chat.returncode == 0 and "Traceback" not in err and "not UTF-8" in err, err
    assert chat.stdout.count(b">") >= 2


def test_binary_files_are_one_line_errors(tmp_path, capsys):
    binary = tmp_path / "random.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    assert "not UTF-8 text" in _cli_error(capsys, GEN + ["--json-schema", str(binary), "hi"])
    assert "not UTF-8 text" in _cli_error(capsys, GEN + ["--grammar", str(binary), "hi"])
    assert "not UTF-8 text" in _cli_error(capsys, ["watermark", "detect", "--key", "1", str(binary)])
    assert "cannot read" in _cli_error(capsys, GEN + ["--json-schema", str(tmp_path / "missing.json"), "hi"])


def test_stdin_prompt_that_is_not_utf8(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a\xffb"), encoding="utf-8"))
    assert "not UTF-8 text" in _cli_error(capsys, GEN + ["-"])


@pytest.mark.parametrize("options", [
    {"watermark": {"scheme": "exp", "key": 1, "n": 10**12}},
    {"watermark": {"scheme": "its", "key": 1, "n": 10**9}},
    {"watermark": {"scheme": "exp", "key": "k" * 10**6}},
    {"watermark": {"scheme": "exp", "key": 2**300}},
    {"speculative": "token-recycling", "speculative_options": {"nodes": 10000}},
    {"speculative": "token-recycling", "speculative_options": {"width": 49152}},
    {"speculative": "rsd", "speculative_options": {"draft": "draft", "branching": [64, 64, 64]}},
    {"speculative": "draft", "speculative_options": {"draft": "x" * 100_000}},
    {"stop": ["x"] * 9},
    {"stop": ["x" * 1001]},
])
def test_unbounded_sizes_are_refused_before_any_allocation(options, lm, client):
    python = {k: ({**v, "draft": lm} if isinstance(v, dict) and v.get("draft") == "draft" else v)
              for k, v in options.items()}
    start = time.perf_counter()
    with pytest.raises(dl.DecodelabError):
        dl.generate(lm, "hi", max_new_tokens=2, temperature=1.0, **python)
    r = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2, "temperature": 1.0, **options})
    _error(r)
    assert time.perf_counter() - start < 10


def test_serve_with_a_bad_port_fails_before_loading_anything():
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "import sys; from decodelab.cli import main; sys.exit(main())",
                           "serve", "--port", "70000"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: argument --port: a port is an integer in [0, 65535], got '70000' (see decodelab serve --help)"]
    assert time.perf_counter() - start < 60  # no model was loaded (that alone takes longer on first use)


def test_messages_keep_the_reason_and_name_the_item(lm, client, capsys):
    with pytest.raises(dl.InvalidOption, match="unclosed group"):
        dl.generate(lm, "hi", regex="a(b", max_new_tokens=2)
    assert "unclosed group" in _cli_error(capsys, GEN + ["--regex", "a(b", "hi"])
    assert "unclosed group" in _error(client.post("/v1/completions", json={"prompt": "hi", "regex": "a(b"}))
    with pytest.raises(dl.InvalidPrompt, match="prompt 1 of the batch: the prompt is empty"):
        dl.generate(lm, ["hi", "", "yo"], max_new_tokens=2)
    assert "prompt 1 of the batch" in _error(client.post("/v1/completions", json={"prompt": ["hi", " ", "yo"]}))


def test_the_same_rules_and_messages_in_python_and_http(lm, client):
    with pytest.raises(dl.InvalidPrompt) as python:
        dl.generate(lm, [{"role": "hacker", "content": "hi"}], max_new_tokens=2)
    http = _error(client.post("/v1/chat/completions", json={"messages": [{"role": "hacker", "content": "hi"}]}))
    assert "role must be one of system, developer, user, assistant, got 'hacker'" in str(python.value)
    assert "role must be one of system, developer, user, assistant, got 'hacker'" in http

    with pytest.raises(dl.InvalidOption) as python:
        dl.generate(lm, "hi", stop=[""], max_new_tokens=2)
    http = _error(client.post("/v1/completions", json={"prompt": "hi", "stop": [""]}))
    assert str(python.value) in http and "empty" in http

    with pytest.raises(dl.InvalidOption, match="finite number"):
        dl.generate(lm, "hi", temperature=math.nan, max_new_tokens=2)
    r = client.post("/v1/completions", content='{"prompt": "hi", "temperature": NaN}',
                    headers={"content-type": "application/json"})
    assert "finite number" in _error(r)


def test_a_body_that_is_not_json_says_so(client):
    r = client.post("/v1/completions", content="prompt=hi", headers={"content-type": "text/plain"})
    message = _error(r)
    assert "JSON" in message and "valid dictionary" not in message


def test_requests_never_measure_cost_curves(monkeypatch, lm, client):
    """Token recycling with a tree size nobody asked for before: the engine thread reads the
    measured grid (interpolating) and never measures while other clients wait."""
    from decodelab.speculative import cost

    calls = []
    original = cost.measure_cost_curve
    monkeypatch.setattr(cost, "measure_cost_curve", lambda *a, **k: calls.append(a) or original(*a, **k))
    monkeypatch.setattr(cost, "_MEMO", {})  # as after a restart
    for nodes in (37, 111, 256):
        r = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 4, "temperature": 0,
                                                 "speculative": "token-recycling",
                                                 "speculative_options": {"nodes": nodes}})
        assert r.status_code == 200, r.text
    assert calls == []


# ---------------------------------------------------------------- generated hostile values
def _method_options() -> list[tuple[Method | None, str]]:
    pairs: list[tuple[Method | None, str]] = [(None, s.name) for s in option_specs(SamplingConfig)]
    pairs += [(None, s.name) for s in option_specs(GenerationOptions) if s.name not in ("records",)]
    for m in dl.methods():
        pairs += [(m, s.name) for s in m.option_specs()]
    return pairs


OPTIONS = _method_options()
HOSTILE = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 2**64, 10**12, -(10**12), 10**5000]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["", " ", "\ud800", "a\udcff", "x" * 200_000, "0", "-1", "1e308", "nan", "inf", "true",
                     "3,2,1", "99,99,99", "\x00", "../../etc/passwd", "tiny-random"]),
    st.booleans(),
    st.lists(st.integers(min_value=-(10**6), max_value=10**6), max_size=300),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=4),
    st.binary(max_size=16),
)
HOSTILE_PROMPTS = st.one_of(
    st.text(max_size=30),
    st.binary(max_size=16),
    st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=20),
    st.lists(st.fixed_dictionaries({"role": st.text(max_size=10), "content": st.text(max_size=10)}), max_size=3),
    st.lists(st.text(max_size=5), max_size=4),
    st.sampled_from(["\ud800", "", [], [[]], {"role": "user"}, None, 3.5]),
)


# reproducible in CI (derandomized, no example database); fixtures are module-scoped or read each example
HOSTILE_SETTINGS = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _request(method: Method | None, name: str, value, draft) -> dict:
    """Keywords with `name` set to the hostile value, the method's other options at its example."""
    if method is None:
        return {name: value}
    return python_keywords(method, {**method.example, name: value}, draft)


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    assert time.perf_counter() - start < CALL_SECONDS
    return result


@HOSTILE_SETTINGS
@given(st.sampled_from(OPTIONS), HOSTILE, HOSTILE_PROMPTS, st.booleans())
def test_python_hostile_options_and_prompts(lm, pair, value, prompt, good_prompt):
    method, name = pair
    CASES["python"] += 1
    options = {"max_new_tokens": 2, "temperature": 1.0, **_request(method, name, value, lm)}
    try:
        _timed(lambda: dl.generate(lm, "hi" if good_prompt else prompt, **options))
    except dl.DecodelabError:
        pass


def _json_safe(value) -> bool:
    try:
        json.dumps(value)
        return not isinstance(value, int) or abs(value) < 10**4000
    except (TypeError, ValueError):
        return False


def _as_text(value) -> str:
    """What a JSON client would send instead of a value JSON cannot carry (Python refuses str() of
    an integer beyond 4300 digits)."""
    try:
        return str(value)[:100]
    except ValueError:
        return f"{value.bit_length()}-bit integer"


@HOSTILE_SETTINGS
@given(st.sampled_from(OPTIONS), HOSTILE, HOSTILE_PROMPTS, st.booleans())
def test_http_hostile_options_and_prompts(client, pair, value, prompt, good_prompt):
    method, name = pair
    if not _json_safe(value) or not _json_safe(prompt):
        value, prompt = _as_text(value), _as_text(prompt)
    CASES["http"] += 1
    fields = {name: value} if method is None else server_body(method, {**method.example, name: value})
    body = {"prompt": "hi" if good_prompt else prompt, "max_tokens": 2, "temperature": 1.0, **fields}
    r = _timed(lambda: client.post("/v1/completions", content=json.dumps(body),
                                   headers={"content-type": "application/json"}))
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert r.json()["error"]["message"]


@settings(HOSTILE_SETTINGS, max_examples=120)
@given(st.sampled_from(OPTIONS), HOSTILE)
def test_cli_hostile_options(capsys, pair, value):
    method, name = pair
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")  # what argv holds for such bytes
    CASES["cli"] += 1
    if method is None:
        flag = "--" + name.replace("_", "-")
        args = [flag] if value is True else [flag, cli_value(value)]
    else:
        args = cli_args(method, {**method.example, name: value})
    try:
        code = _timed(lambda: cli_main(GEN + ["--temperature", "1", "hi"] + args))
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code in (0, 2), err
    if code == 2:
        assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err


def test_server_still_serves_after_the_hostile_suite(client):
    """Runs after the suites above (file order): /health answers, a normal request works, and the
    process did not grow without bound."""
    assert client.get("/health").status_code == 200
    r = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 4, "temperature": 0})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] is not None
    assert psutil.Process().memory_info().rss - START_RSS[0] < 2**30  # bounded: no cache grew per request
    assert CASES["http"] >= 200 and CASES["python"] >= 200 and CASES["cli"] >= 100


def test_an_integer_of_five_thousand_digits_is_a_clear_error_everywhere(lm, client, capsys):
    """Python refuses to convert integers beyond 4300 digits to or from text; no surface may turn
    that refusal into a traceback or a 500."""
    digits = "9" * 5000
    with pytest.raises(dl.InvalidOption, match="temperature"):
        dl.generate(lm, "hi", max_new_tokens=2, temperature=10**5000)
    r = client.post("/v1/completions", content='{"prompt": "hi", "max_tokens": 2, "temperature": ' + digits + "}",
                    headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500 and r.json()["error"]["message"], r.text
    for flag in ("--temperature", "--seed", "--max-new-tokens"):
        try:
            code = cli_main(GEN + [flag, digits, "hi"])
        except SystemExit as exc:  # argparse's own refusal
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1 and len(err) < 800, err
