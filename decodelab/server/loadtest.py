"""Load test on loopback: many concurrent streaming requests, checked against single requests.

1. References: each distinct (prompt, seed) pair is sent alone, not streamed, one at a time.
2. Load: `requests` streaming chat requests start at once (pair i % distinct each); every
   stream must finish without error and its text must equal the reference of its pair —
   batching, queueing and interleaving must not change a seeded result.
3. Memory: the server's resident memory (from /metrics) is sampled during the run.

Run it against a server it starts (`python -m decodelab.server.loadtest --model smollm2-135m`)
or one already running (`--url http://127.0.0.1:8000`). Prints a JSON report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import httpx

from .runner import free_port

# Short prompts written for this test (no external text).
PROMPTS = [
    "Name a colour.", "Say hello in French.", "What is two plus two?", "Give me a fruit.",
    "Write one word about the sea.", "Name a planet.", "Describe rain in three words.", "Pick a number.",
    "What sound does a cat make?", "Name a tree.", "Finish this: once upon a", "What is the opposite of hot?",
    "Name a musical instrument.", "Say something kind.", "Name a city in Italy.", "What do bees make?",
    "Give a synonym for happy.", "Name a shape.", "What colour is the sky?", "Name a vegetable.",
]


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


async def _reference(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await client.post("/v1/chat/completions", json=body)
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]


async def _stream_one(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    first = None
    text = ""
    try:
        async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
            if response.status_code != 200:
                return {"error": f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"}
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return {"error": chunk["error"]["message"]}
                for choice in chunk["choices"]:
                    piece = choice["delta"].get("content") or ""
                    if piece and first is None:
                        first = time.perf_counter() - start
                    text += piece
    except httpx.HTTPError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"text": text, "latency": time.perf_counter() - start, "ttft": first}


async def _sample_memory(client: httpx.AsyncClient, samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            value = _metric((await client.get("/metrics")).text, "decodelab_process_resident_memory_bytes")
            if value is not None:
                samples.append(value)
        except httpx.HTTPError:
            pass
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass


async def run_async(url: str, *, requests: int = 200, distinct: int = 20, max_tokens: int = 8,
                    temperature: float = 0.8, model: str | None = None, api_key: str | None = None,
                    timeout: float = 600.0) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=requests + 10, max_keepalive_connections=requests + 10)
    pairs = [(PROMPTS[i % len(PROMPTS)], 1000 + i) for i in range(distinct)]
    bodies = [{"model": model, "messages": [{"role": "user", "content": p}], "max_tokens": max_tokens,
               "temperature": temperature, "seed": s} for p, s in pairs]
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=timeout) as client:
        t0 = time.perf_counter()
        references = [await _reference(client, b) for b in bodies]
        reference_seconds = time.perf_counter() - t0
        metrics_before = (await client.get("/metrics")).text  # the load phase alone from here
        memory: list[float] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample_memory(client, memory, stop))
        t1 = time.perf_counter()
        results = await asyncio.gather(*[_stream_one(client, bodies[i % distinct]) for i in range(requests)])
        wall = time.perf_counter() - t1
        stop.set()
        await sampler
        metrics_after = (await client.get("/metrics")).text

    errors = [r["error"] for r in results if "error" in r]
    ok = [(i, r) for i, r in enumerate(results) if "error" not in r]
    mismatches = [i for i, r in ok if r["text"] != references[i % distinct]]
    latencies = sorted(r["latency"] for _, r in ok)
    ttfts = sorted(r["ttft"] for _, r in ok if r["ttft"] is not None)

    def delta(name: str) -> float:
        return (_metric(metrics_after, name) or 0.0) - (_metric(metrics_before, name) or 0.0)

    def pct(values: list[float], q: float) -> float | None:
        return round(values[min(len(values) - 1, int(q * len(values)))], 3) if values else None

    batches = delta("decodelab_batches_total")
    tokens = delta("decodelab_generated_tokens_total")
    return {
        "requests": requests, "distinct_prompt_seed_pairs": distinct, "max_tokens": max_tokens,
        "errors": len(errors), "error_examples": errors[:3], "mismatches": len(mismatches),
        "mismatch_examples": [{"request": i, "expected": references[i % distinct], "got": results[i]["text"]}
                              for i in mismatches[:3]],
        "wall_seconds": round(wall, 2), "requests_per_second": round(requests / wall, 2),
        "generated_tokens": int(tokens), "tokens_per_second": round(tokens / wall, 1),
        "single_request_seconds_mean": round(reference_seconds / distinct, 3),
        "latency_p50": pct(latencies, 0.5), "latency_p95": pct(latencies, 0.95), "latency_max": pct(latencies, 1.0),
        "ttft_p50": pct(ttfts, 0.5), "ttft_p95": pct(ttfts, 0.95),
        "batches": int(batches), "mean_batch_rows": round(delta("decodelab_batch_rows_total") / batches, 2)
        if batches else None,
        "server_rss_mb_before": round((_metric(metrics_before, "decodelab_process_resident_memory_bytes") or 0) / 2**20),
        "server_rss_mb_peak": round(max(memory, default=0) / 2**20),
        "server_rss_mb_after": round((_metric(metrics_after, "decodelab_process_resident_memory_bytes") or 0) / 2**20),
    }


class ServerProcess:
    """`python -m decodelab.server` in a subprocess on a free loopback port."""

    def __init__(self, model: str, *, max_batch: int = 16, queue_size: int = 512, timeout: float = 1800.0,
                 extra: list[str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "decodelab.server", "--model", model, "--port", str(self.port),
               "--max-batch", str(max_batch), "--queue-size", str(queue_size), "--timeout", str(timeout),
               "--log-level", "warning",
               *(extra or [])]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait_ready(self, timeout: float = 300.0) -> ServerProcess:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError("the server did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run(url: str | None = None, *, model: str = "smollm2-135m", max_batch: int = 16, weights: str | None = None,
        **options: Any) -> dict[str, Any]:
    """Run the load test against `url`, or against a server started here for `model` (at `weights`;
    outputs are compared bit for bit with single requests, which holds at float32 weights: with
    bfloat16 activations a row may round differently in another batch).

    Example:
        >>> report = run(model="tiny-random", requests=20, distinct=5)  # doctest: +SKIP
        >>> report["errors"], report["mismatches"]  # doctest: +SKIP
        (0, 0)
    """
    if url is not None:
        return asyncio.run(run_async(url, **options))
    queue = max(512, int(options.get("requests", 200)) + 16)
    extra = ["--weights", weights] if weights else None
    with ServerProcess(model, max_batch=max_batch, queue_size=queue, extra=extra) as server:
        report = asyncio.run(run_async(server.url, **options))
    report.update(model=model, max_batch=max_batch, cpu_threads=os.cpu_count(), weights=weights or "auto")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m decodelab.server.loadtest", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--model", default="smollm2-135m", help="model for the started server")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--distinct", type=int, default=20, help="distinct (prompt, seed) pairs")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args(argv)
    report = run(args.url, model=args.model, max_batch=args.max_batch, requests=args.requests,
                 distinct=args.distinct, max_tokens=args.max_tokens, temperature=args.temperature,
                 api_key=args.api_key)
    print(json.dumps(report, indent=2))
    return 0 if report["errors"] == 0 and report["mismatches"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
