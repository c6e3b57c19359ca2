"""Counters for `/metrics`, written in the Prometheus text exposition format (no client library)."""

from __future__ import annotations

import threading
from collections import Counter

import psutil

from .engine import Engine

ENDPOINTS = ("/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions",
             "/v1/decodelab/info")


class RequestCounter:
    """HTTP requests by endpoint and status code (unknown paths count as "other")."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, int]] = Counter()

    def add(self, path: str, status: int) -> None:
        endpoint = path if path in ENDPOINTS else ("/static" if path.startswith("/static/") else "other")
        with self._lock:
            self._counts[(endpoint, status)] += 1

    def items(self) -> list[tuple[tuple[str, int], int]]:
        with self._lock:
            return sorted(self._counts.items())


def render(requests: RequestCounter, engine: Engine, extra: dict[str, int] | None = None) -> str:
    """The /metrics page."""
    s = engine.stats
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{labels} {value:.6g}" if isinstance(value, float) else f"{name}{labels} {value}")

    metric("decodelab_requests_total", "counter", "HTTP requests by endpoint and status code.",
           [(f'{{endpoint="{e}",status="{c}"}}', n) for (e, c), n in requests.items()])
    tokens_per_second = s.recent_tokens_per_second()
    with s.lock:
        rate = s.accepted / s.proposed if s.proposed else 0.0
        metric("decodelab_queue_length", "gauge", "Requests waiting for the model.", [("", engine.queue_length)])
        metric("decodelab_active_rows", "gauge", "Rows (prompt x n) in the batch now running.", [("", s.active_rows)])
        metric("decodelab_batches_total", "counter", "Batches run by the engine.", [("", s.batches)])
        metric("decodelab_batch_rows_total", "counter", "Rows over all batches (mean batch size = this / batches).",
               [("", s.batch_rows)])
        metric("decodelab_batch_rows_max", "gauge", "Largest batch run so far, in rows.", [("", s.max_batch_rows_seen)])
        metric("decodelab_prompt_tokens_total", "counter", "Prompt tokens prefilled.", [("", s.prompt_tokens)])
        metric("decodelab_generated_tokens_total", "counter", "Tokens generated.", [("", s.generated_tokens)])
        metric("decodelab_busy_seconds_total", "counter", "Seconds the engine spent running batches.",
               [("", float(s.busy_seconds))])
        metric("decodelab_tokens_per_second", "gauge",
               "Generated tokens per busy second over batches of the last 60 s.", [("", float(tokens_per_second))])
        metric("decodelab_speculative_proposed_total", "counter", "Draft tokens proposed.", [("", s.proposed)])
        metric("decodelab_speculative_accepted_total", "counter", "Draft tokens accepted.", [("", s.accepted)])
        metric("decodelab_speculative_acceptance_rate", "gauge", "Accepted / proposed draft tokens since start.",
               [("", float(rate))])
        metric("decodelab_jobs_completed_total", "counter", "Requests that ran to the end.", [("", s.jobs_done)])
        metric("decodelab_jobs_joined_total", "counter", "Requests that joined a running batch.",
               [("", s.joined_jobs)])
        metric("decodelab_jobs_failed_total", "counter", "Requests that failed in the engine.", [("", s.jobs_failed)])
        metric("decodelab_rows_cancelled_total", "counter", "Rows stopped because the client disconnected.",
               [("", s.cancelled_rows)])
        metric("decodelab_rows_timed_out_total", "counter", "Rows stopped by the time limit.", [("", s.timed_out_rows)])
    for name, value in (extra or {}).items():
        metric(f"decodelab_{name}", "gauge", name.replace("_", " ") + ".", [("", value)])
    metric("decodelab_process_resident_memory_bytes", "gauge", "Resident memory of the server process.",
           [("", psutil.Process().memory_info().rss)])
    return "\n".join(lines) + "\n"
