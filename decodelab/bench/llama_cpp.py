"""Bench method `llama-cpp`: llama.cpp (G. Gerganov et al., ggml) on the same GGUF file, as the
CPU speed anchor, through the `xllamacpp` wheel's server API (optional extra
`llama-cpp`), run in a process of its own (`LlamaCppProcess`: sharing a process slowed both
engines).

The prompt is sent as the same token ids decodelab uses; output ids come from the response's
log-probability records. Times are llama.cpp's own per-request timings (`timings.prompt_ms`,
`timings.predicted_ms`), so they exclude the JSON round trip. Sampling: greedy at temperature 0,
otherwise llama.cpp's own sampler with the same temperature and no other warpers (not the same
random stream as decodelab's).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import InvalidOption
from ..models.lm import LM, Message


class LlamaCppUnavailable(InvalidOption):
    """The `llama-cpp` bench method needs the optional extra and a GGUF model."""


def llama_cpp_runner(lm: LM, *, threads: int | None = None, context: int = 4096) -> Callable:
    from .methods import MethodRun

    try:
        import xllamacpp  # noqa: F401  (checked here, used in the server's own process)
    except ImportError:
        raise LlamaCppUnavailable(
            "bench method 'llama-cpp' needs the optional extra: pip install 'decodelab[llama-cpp]'") from None
    path = getattr(lm, "gguf_path", None)
    if path is None:
        raise LlamaCppUnavailable(f"bench method 'llama-cpp' needs a GGUF model; {lm.name} was not loaded from one")
    server = LlamaCppProcess(str(path), threads=threads or torch.get_num_threads(),
                             context=min(context, lm.context_length))

    def run(messages: list[Message], settings) -> MethodRun:
        ids = lm.encode(messages)
        request = {"prompt": ids, "max_tokens": settings.max_new_tokens, "temperature": settings.temperature,
                   "top_k": 0, "top_p": 1.0, "min_p": 0.0, "cache_prompt": False, "logprobs": 1}
        if settings.seed is not None:
            request["seed"] = settings.seed
        response = server.handle_completions(request)
        if "error" in response:
            raise RuntimeError(f"llama.cpp: {response['error']}")
        choice = response["choices"][0]
        tokens = [int(t["id"]) for t in (choice.get("logprobs") or {}).get("content", [])]
        timings = response["timings"]
        prompt_s = timings["prompt_ms"] / 1000
        return MethodRun(token_ids=tokens, wall_time=prompt_s + timings["predicted_ms"] / 1000,
                         prefill_time=prompt_s, target_forwards=1 + int(timings["predicted_n"]))

    run.server = server  # keeps the model loaded while the method lives
    return run


class LlamaCppProcess:
    """An `xllamacpp.Server` in a process of its own, answering `handle_completions` requests.

    Why a process: with the server loaded in the same process, torch's decoding ran 2-3x slower
    even while llama.cpp sat idle, and llama.cpp itself 3x slower than alone (measured on
    SmolLM2, 2 threads: ours 14 -> 39 ms/token, llama.cpp 9 -> 27), which had made every
    side-by-side table compare two handicapped engines. In separate processes each runs at its
    own speed. The child is `python -m decodelab.bench.llama_cpp` speaking JSON lines over its
    stdin/stdout (not multiprocessing, which re-runs an unguarded calling script); it ends with
    `close()`, when this object is collected, or when the parent's pipe closes.
    """

    def __init__(self, gguf_path: str, *, threads: int, context: int):
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
        self._process = subprocess.Popen(
            [sys.executable, "-m", "decodelab.bench.llama_cpp", gguf_path, str(threads), str(context)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        try:
            ready = self._receive()
        except RuntimeError as exc:  # the library crashed on the file
            raise LlamaCppUnavailable(f"llama.cpp could not load {gguf_path}: {exc}") from None
        if "error" in ready:
            self.close()
            raise LlamaCppUnavailable(f"llama.cpp could not load {gguf_path}: {ready['error']}")

    def handle_completions(self, request: dict) -> dict:
        if self._process.poll() is not None or self._process.stdin.closed:
            raise RuntimeError("the llama.cpp process is not running")
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        return self._receive()

    def _receive(self) -> dict:
        line = self._process.stdout.readline()
        if not line:
            code = self._process.wait(timeout=10)
            raise RuntimeError(f"the llama.cpp process ended (exit code {code})")
        return json.loads(line)

    def close(self) -> None:
        if self._process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _serve_llama_cpp(gguf_path: str, threads: int, context: int) -> None:
    """The llama.cpp process: load the model, then answer one JSON request per stdin line."""
    # the protocol owns the original stdout; anything the C library prints goes to stderr
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def reply(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    try:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = gguf_path
        params.n_ctx = context
        params.n_parallel = 1
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads
        params.warmup = False
        params.verbosity = -1
        server = xllamacpp.Server(params)
    except Exception as exc:  # reported to the parent, which raises a typed error
        reply({"error": f"{type(exc).__name__}: {exc}"})
        return
    reply({"ready": True})
    for line in sys.stdin:
        try:
            reply(server.handle_completions(json.loads(line)))
        except Exception as exc:
            reply({"error": f"{type(exc).__name__}: {exc}"})


def llama_cpp_token_logprobs(run: Callable, ids: list[int]) -> list[float]:
    """Natural-log probabilities llama.cpp gives each of `ids[1:]` after the tokens before it
    (teacher forcing), from the server of a `llama_cpp_runner`.

    llama.cpp's completion API has no prompt echo, so each token is scored by its own one-token
    request: the prompt is the prefix (the server's prompt cache makes that one new forward),
    a logit bias forces the next token to be the text's own, and the reported log-probability is
    taken before sampling (`post_sampling_probs: false`), i.e. from the model's raw logits, which
    the bias does not touch.

    Example (needs the `llama-cpp` extra):
        >>> run = llama_cpp_runner(dl.load("smollm2-135m"))          # doctest: +SKIP
        >>> llama_cpp_token_logprobs(run, [504, 3458, 314])          # doctest: +SKIP
        [-6.1..., -2.3...]
    """
    server = run.server
    scores = []
    for i in range(1, len(ids)):
        request = {"prompt": ids[:i], "n_predict": 1, "temperature": 0.0, "cache_prompt": True,
                   "n_probs": 1, "post_sampling_probs": False, "logit_bias": [[int(ids[i]), 1e6]]}
        response = server.handle_completions(request)
        if "error" in response:
            raise RuntimeError(f"llama.cpp: {response['error']}")
        record = _first_token_record(response)
        if int(record["id"]) != int(ids[i]):
            raise RuntimeError(f"llama.cpp did not take the forced token {ids[i]} (got {record['id']})")
        scores.append(float(record["logprob"]))
    return scores


def _first_token_record(response: dict) -> dict:
    """The generated token's {id, logprob} from either response layout (native or OpenAI-like)."""
    if "completion_probabilities" in response:
        return response["completion_probabilities"][0]
    return response["choices"][0]["logprobs"]["content"][0]


if __name__ == "__main__":
    _serve_llama_cpp(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
