"""Lossy methods refuse to combine with a method that assumes the model's exact law (watermarks),
with a clear error on every surface: a typed InvalidOption in Python, one line and exit 2 on the
CLI, a 400 JSON error from the server. The rule is its own check, not the slot rule: a test
method that would otherwise compose with everything is refused too, and a lossless method is not.
"""

from __future__ import annotations

import pytest

import decodelab as dl
from decodelab.cli import main as cli_main
from decodelab.decoding.method import Capabilities, Method, Parts, Selected, check_combination, get_method
from decodelab.sampling import SamplingConfig

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from decodelab.server import ServerConfig, create_app  # noqa: E402

LOSSY = ["lossy-relaxed", "lossy-judge", "lossy-route", "lossy-thinking", "lossy-early-exit"]
WATERMARK = {"scheme": "exp", "key": "secret"}


def _options(name: str, draft) -> dict:
    m = get_method("speculative", name)
    return {k: (draft if k == "draft" else v) for k, v in m.example.items()}


@pytest.fixture(scope="module")
def lm():
    return dl.load("tiny-random")


@pytest.mark.parametrize("name", LOSSY)
def test_lossy_method_with_a_watermark_is_a_typed_error(lm, name):
    with pytest.raises(dl.InvalidOption, match="is lossy .* assumes the model's exact law") as info:
        dl.generate(lm, "hi", speculative=name, speculative_options=_options(name, lm), watermark=WATERMARK,
                    temperature=1.0, max_new_tokens=2)
    assert info.value.code == "lossy_combination"


def test_lossy_method_with_a_watermark_is_one_line_on_the_cli(capsys):
    code = cli_main(["generate", "hi", "--model", "tiny-random", "--max-new-tokens", "2", "--temperature", "1",
                     "--spec", "lossy-route", "--draft", "tiny-random", "--watermark", "exp",
                     "--watermark-option", "key=secret"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "lossy-route is lossy" in err and "Traceback" not in err


def test_lossy_method_with_a_watermark_is_a_400_from_the_server(lm):
    app = create_app({"tiny-random": lm, "draft": lm}, ServerConfig())
    with TestClient(app) as client:
        response = client.post("/v1/completions", json={
            "model": "tiny-random", "prompt": "hi", "max_tokens": 2, "temperature": 1.0,
            "speculative": "lossy-relaxed", "speculative_options": {"draft": "draft"}, "watermark": WATERMARK})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "lossy_combination" and "lossy-relaxed is lossy" in error["message"]


def _selected(name: str, caps: Capabilities, slot: str) -> Selected:
    m = Method(name, slot, "test", "none", object, lambda ctx, o: Parts(), caps)
    return Selected(m, None, name=name, slot=slot)


def test_the_rule_binds_even_where_slots_would_compose():
    """An exact-law method that composes with every slot ("*") still refuses a lossy one; the same
    pair with a lossless method passes (negative control: the refusal is about lossiness)."""
    exact_law = _selected("law-observer", Capabilities(exact_law=True, composes_with=frozenset({"*"})), "observer")
    lossy = _selected("lossy-x", Capabilities(lossless=False, lossy=True), "speculative")
    lossless = _selected("exact-x", Capabilities(lossless=True), "speculative")
    config = SamplingConfig(temperature=1.0)
    with pytest.raises(dl.InvalidOption, match="lossy-x is lossy"):
        check_combination([lossy, exact_law], config)
    with pytest.raises(dl.InvalidOption, match="lossy-x is lossy"):
        check_combination([exact_law, lossy], config)
    check_combination([lossless, exact_law], config)


def test_every_lossy_method_is_labelled():
    for name in LOSSY:
        caps = get_method("speculative", name).capabilities
        assert caps.lossy and not caps.lossless
        assert get_method("speculative", name).describe()["lossy"] is True
    assert all(m.capabilities.exact_law for m in dl.methods() if m.slot == "watermark")
