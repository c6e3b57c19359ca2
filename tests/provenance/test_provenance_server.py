"""The provenance routes: the same p-values as Python, and 4xx JSON for bad input."""

from __future__ import annotations

import pytest

import decodelab as dl

pytest.importorskip("fastapi", reason="the server's optional dependencies are not installed")


@pytest.fixture(scope="module")
def client(trained):
    from fastapi.testclient import TestClient

    from decodelab.server import create_app

    return TestClient(create_app({"trained": trained.lm}))


def test_mia_route_matches_python(trained, client):
    body = {"candidates": trained.members[:3], "reference": trained.non_members[:40], "method": "zlib"}
    reply = client.post("/v1/decodelab/provenance/mia", json=body)
    assert reply.status_code == 200, reply.text
    expected = dl.provenance.mia(trained.lm, trained.members[:3], trained.non_members[:40], method="zlib")
    assert [r["p_value"] for r in reply.json()["data"]] == pytest.approx(expected.p_values)
    assert reply.json()["reference"] == 40


def test_identifiers_route_matches_python(trained, client):
    body = {"identifiers": [trained.identifier], "kind": "words", "length": 4, "alternatives": 30, "seed": 5}
    reply = client.post("/v1/decodelab/provenance/identifiers", json=body)
    assert reply.status_code == 200, reply.text
    expected = dl.provenance.detect_identifiers(trained.lm, [trained.identifier], kind="words", length=4,
                                                alternatives=30, seed=5)
    assert reply.json()["data"][0]["p_value"] == pytest.approx(expected[0].p_value)


@pytest.mark.parametrize("route,bad", [
    ("mia", {"candidates": [], "reference": ["a"]}),
    ("mia", {"candidates": ["a"], "reference": ["b"], "k": 0}),
    ("mia", {"candidates": ["a"], "reference": ["b"], "method": "nope"}),
    ("mia", {"candidates": ["a"], "reference": ["b"], "shots": 99}),
    ("mia", {"candidates": ["  "], "reference": ["b"]}),
    ("mia", {"candidates": ["x" * 2000], "reference": ["b"]}),
    ("mia", {"candidates": ["a"], "reference": ["b"], "model": "other"}),
    ("identifiers", {"identifiers": ["a"], "alternatives": 0}),
    ("identifiers", {"identifiers": ["a"], "length": 65}),
    ("identifiers", {"identifiers": ["a"], "bogus": 1}),
])
def test_bad_requests_are_4xx_json(client, route, bad):
    reply = client.post(f"/v1/decodelab/provenance/{route}", json=bad)
    assert 400 <= reply.status_code < 500, reply.text
    assert "error" in reply.json() and "message" in reply.json()["error"]


def test_palimpsest_route_matches_python(trained, client):
    body = {"texts": trained.members[:20], "resamples": 99, "seed": 3}
    reply = client.post("/v1/decodelab/provenance/palimpsest", json=body)
    assert reply.status_code == 200, reply.text
    expected = dl.provenance.palimpsest(trained.lm, trained.members[:20], resamples=99, seed=3)
    assert reply.json()["p_value"] == pytest.approx(expected.p_value)
    for bad in ({"texts": ["a", "b"]}, {"texts": trained.members[:5], "resamples": 0},
                {"texts": trained.members[:5], "reference_model": "nope"}):
        reply = client.post("/v1/decodelab/provenance/palimpsest", json=bad)
        assert 400 <= reply.status_code < 500 and "error" in reply.json(), reply.text
