"""Bench method `llama-cpp`: llama.cpp (G. Gerganov et al., ggml) on the same GGUF file, as the
CPU speed anchor, through the `xllamacpp` wheel's in-process server API (optional extra
`llama-cpp`).

The prompt is sent as the same token ids decodelab uses; output ids come from the response's
log-probability records. Times are llama.cpp's own per-request timings (`timings.prompt_ms`,
`timings.predicted_ms`), so they exclude the JSON round trip. Sampling: greedy at temperature 0,
otherwise llama.cpp's own sampler with the same temperature and no other warpers (not the same
random stream as decodelab's).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import InvalidOption
from ..models.lm import LM, Message


class LlamaCppUnavailable(InvalidOption):
    """The `llama-cpp` bench method needs the optional extra and a GGUF model."""


def llama_cpp_runner(lm: LM, *, threads: int | None = None, context: int = 4096) -> Callable:
    from .methods import MethodRun

    try:
        import xllamacpp
    except ImportError:
        raise LlamaCppUnavailable(
            "bench method 'llama-cpp' needs the optional extra: pip install 'decodelab[llama-cpp]'") from None
    path = getattr(lm, "gguf_path", None)
    if path is None:
        raise LlamaCppUnavailable(f"bench method 'llama-cpp' needs a GGUF model; {lm.name} was not loaded from one")
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_ctx = min(context, lm.context_length)
    params.n_parallel = 1
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads or torch.get_num_threads()
    params.warmup = False
    params.verbosity = -1
    server = xllamacpp.Server(params)

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
