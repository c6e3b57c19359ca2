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
