"""`decodelab bytes ...` and `decodelab fim`: output, and one-line errors on bad input."""

from __future__ import annotations

import json
import math

import pytest
from surfaces import run_cli

TINY = ["--model", "tiny-random"]


run = run_cli


def test_next_logprob_sample_heal(capsys):
    code, out, _ = run(capsys, "bytes", "next", "th", *TINY, "--top", "257", "--prune", "0")
    probs = [math.exp(float(line.split("\t")[1])) for line in out.splitlines()]
    assert code == 0 and len(probs) == 257 and sum(probs) == pytest.approx(1.0, abs=1e-6)
    code, a, _ = run(capsys, "bytes", "logprob", "th", *TINY)
    code2, b, _ = run(capsys, "bytes", "logprob", "the", *TINY)
    assert code == code2 == 0 and float(b) < float(a) < 0
    code, out, _ = run(capsys, "bytes", "sample", "th", *TINY, "--max-bytes", "5")
    assert code == 0 and out.startswith("th")
    code, out, _ = run(capsys, "bytes", "heal", "the ca", *TINY, "--max-new-tokens", "3")
    assert code == 0 and set(json.loads(out)) == {"plain", "healed", "backed_up"}


@pytest.mark.parametrize("argv", [
    ["bytes", "next", "x", *TINY, "--top", "0"],
    ["bytes", "next", "x", *TINY, "--prune", "2"],
    ["bytes", "sample", "x", *TINY, "--max-bytes", "0"],
    ["fim", "--prefix", "a", "--suffix", "b", *TINY],  # no FIM tokens
])
def test_bad_input_is_one_line_error(capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
