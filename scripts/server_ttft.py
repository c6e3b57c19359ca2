"""Server time to first token and throughput with 1, 8 and 32 concurrent streaming clients,
continuous batching off then on (SmolLM2, in-process server on loopback).

Clients arrive 50 ms apart (as real clients do, rather than all in the same instant), ask for 32
tokens each (EOS suppressed so every request runs to its budget) and stream the reply.

Usage: python scripts/server_ttft.py [weights]     (weights: auto, int4, int8, bf16, fp32; default auto)
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

import httpx

import decodelab as dl
from decodelab.server import ServerConfig, create_app
from decodelab.server.runner import BackgroundServer

PROMPTS = ["Name a colour.", "Say hello in French.", "What is two plus two?", "Give me a fruit.",
           "Name a planet.", "Count to three.", "What is the capital of Italy?", "Name an animal."]
TOKENS = 32
ARRIVAL_GAP = 0.05


async def one_client(url: str, i: int) -> tuple[float | None, float]:
    await asyncio.sleep(i * ARRIVAL_GAP)
    body = {"messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "max_tokens": TOKENS,
            "temperature": 0.7, "seed": i, "stream": True, "logit_bias": {"2": -100}}
    start = time.perf_counter()
    first = None
    async with httpx.AsyncClient(timeout=600) as client:
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if first is None and line.startswith("data: {") and '"content": "' in line:
                    first = time.perf_counter() - start
    return first, time.perf_counter() - start


async def load(url: str, clients: int) -> dict[str, float]:
    start = time.perf_counter()
    results = await asyncio.gather(*[one_client(url, i) for i in range(clients)])
    wall = time.perf_counter() - start
    ttft = [first for first, _ in results if first is not None]
    return {"ttft_median_s": statistics.median(ttft), "ttft_max_s": max(ttft),
            "tokens_per_s": clients * TOKENS / wall}


def main() -> None:
    lm = dl.load(weights=sys.argv[1] if len(sys.argv) > 1 else "auto")
    rows = []
    for continuous in (False, True):
        app = create_app({"smollm2-135m": lm}, ServerConfig(max_batch=32, continuous_batching=continuous))
        with BackgroundServer(app) as server:
            asyncio.run(load(server.url, 1))  # warm-up
            for clients in (1, 8, 32):
                rows.append({"continuous": continuous, "clients": clients, **asyncio.run(load(server.url, clients))})
                print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
