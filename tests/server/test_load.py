"""Load test on loopback with the packaged model: 200 concurrent streaming requests finish with
no error, each with exactly the text it gets alone, and the server's memory stays bounded."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the server's optional dependencies are not installed")

from decodelab.server.loadtest import run  # noqa: E402


@pytest.mark.slow
def test_200_concurrent_streams_on_the_default_model():
    # float32: batching must not change a seeded result bit for bit (bf16 activations may round
    # differently with other rows in the batch)
    report = run(model="smollm2-135m", weights="fp32", requests=200, distinct=20, max_tokens=8, max_batch=16)
    print(report)
    assert report["errors"] == 0, report["error_examples"]
    assert report["mismatches"] == 0
    assert report["generated_tokens"] > 0
    assert report["batches"] < 200  # requests really were batched
    # Bounded memory: 200 in-flight requests add little on top of the loaded model.
    assert report["server_rss_mb_peak"] - report["server_rss_mb_before"] < 1024


@pytest.mark.slow
def test_load_on_tiny_model_also_checks_outputs():
    report = run(model="tiny-random", requests=60, distinct=6, max_tokens=8)
    assert report["errors"] == 0 and report["mismatches"] == 0
