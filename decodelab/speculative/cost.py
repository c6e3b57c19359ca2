"""Measured verification cost t(n): time of one target forward over n new tokens.

Measured once per model, weight precision, machine and thread count, on one fixed grid of sizes
(`COST_SIZES`, up to the largest tree a request may ask for), and cached in the decodelab cache
folder; sizes between grid points are interpolated. So draft-length and tree-size choices follow
this hardware rather than a GPU paper's constants, and no option value ever needs a new
measurement.

Measuring takes the CPU for a while, so it must not happen where others wait: the server measures
its models when it starts, and its engine thread never measures (`no_measurement`); a method
that finds no curve there falls back to its non-adaptive behaviour. A measurement records how
busy the rest of the machine was (`others_cpu`); one taken under load is stored as such, never
replaces a quiet one, and is measured again when the machine is quiet. Files are replaced
atomically.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import psutil
import torch

from ..engine import native_int4
from ..engine.quantized_linear import int4_kernel_of
from ..engine.sequence import Sequence
from ..models.lm import LM
from ..models.registry import cache_dir
from .tree_shape import MAX_TREE_NODES, interpolated_cost

# every size a chain or tree verify can have: a tree of MAX_TREE_NODES nodes plus the pending token
# 5, 9, 13 and 17 open a new 4-row block of the packed int4/int8 kernels, where t(n) steps up
COST_SIZES = (1, 2, 3, 4, 5, 6, 8, 9, 12, 13, 16, 17, 24, 32, 48, 64, 96, 128, 192, MAX_TREE_NODES + 1)
BUSY_OTHERS_CPU = 0.15  # other processes used more than this share of the machine's CPU: "under load"
_FORMAT = 6  # 4: verify forwards run step-consistent attention (one SDPA call per new token); 5: int4 kernel in the key;
# 6: few-query attention in float32, the kernel streaming 8 rows per pass

log = logging.getLogger("decodelab")
_MEMO: dict[str, dict[int, float]] = {}
_LOCK = threading.Lock()
_FORBIDDEN: contextvars.ContextVar[bool] = contextvars.ContextVar("decodelab_no_cost_measurement", default=False)


@contextlib.contextmanager
def no_measurement() -> Iterator[None]:
    """In this block (this thread), `verify_cost_curve` reads caches but never measures.

    Example:
        >>> import decodelab as dl
        >>> with no_measurement():
        ...     verify_cost_curve(dl.load("tiny-random", hidden_size=48), sizes=(1, 4))   # not measured yet
        {}
    """
    token = _FORBIDDEN.set(True)  # a context variable: each thread has its own value
    try:
        yield
    finally:
        _FORBIDDEN.reset(token)


def measurement_allowed() -> bool:
    return not _FORBIDDEN.get()


def _cache_file(lm: LM, context: int):
    weights = getattr(lm, "weights", "fp32")  # t(n) differs a lot between int4/int8/bf16/fp32 kernels
    kernel = int4_kernel_of(lm.model)
    weights += "-" + kernel + ("-" + native_int4.build_id() if kernel == "decodelab" else "")  # a rebuilt kernel re-measures
    config = lm.model.config
    shape = f"{lm.vocab_size}x{getattr(config, 'hidden_size', 0)}x{lm.num_layers}"  # tiny-random sizes differ
    tag = f"{lm.name}|{shape}|{weights}|{platform.processor() or platform.machine()}|{torch.get_num_threads()}|{context}"
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in tag)[:150]
    return cache_dir() / "cost" / f"{safe}.json"


def verify_cost_curve(lm: LM, sizes: tuple[int, ...] | None = None, *, context: int = 256, repeats: int = 3,
                      use_cache: bool = True) -> dict[int, float]:
    """Seconds for one forward over n tokens at the given context, for each n in `sizes`
    (default: the grid `COST_SIZES`; other sizes are interpolated from it).

    With `use_cache` (the default) the grid is measured once (the fastest of `repeats` runs after a
    warm-up) and cached; `use_cache=False` measures exactly `sizes` now, for experiments. Inside
    `no_measurement()` a missing curve is `{}`.

    Example:
        >>> import decodelab as dl
        >>> curve = verify_cost_curve(dl.load("tiny-random"), sizes=(1, 4), repeats=1, use_cache=False)
        >>> sorted(curve)
        [1, 4]
    """
    if not use_cache:
        return measure_cost_curve(lm, sizes or COST_SIZES, context=context, repeats=repeats)[0]
    curve = cached_cost_curve(lm, context=context, repeats=repeats)
    if not curve:
        return {}
    return {n: curve[n] if n in curve else interpolated_cost(curve, n) for n in (sizes or COST_SIZES)}


def cached_cost_curve(lm: LM, *, context: int = 256, repeats: int = 3) -> dict[int, float]:
    """The whole grid's curve: from memory, from the cache file, or measured now (when allowed)."""
    path = _cache_file(lm, context)
    key = str(path)
    with _LOCK:
        if key in _MEMO:
            return _MEMO[key]
        stored = _read(path)
        allowed = measurement_allowed()
        if stored is not None and (not stored["under_load"] or not allowed):
            _MEMO[key] = stored["curve"]
            return stored["curve"]
        if not allowed:
            return {}
        curve, others = measure_cost_curve(lm, COST_SIZES, context=context, repeats=repeats)
        under_load = others > BUSY_OTHERS_CPU
        if stored is not None and under_load:
            # two noisy measurements: other processes only add time, so the minimum is closer to the truth
            curve = {n: min(curve[n], stored["curve"].get(n, curve[n])) for n in curve}
        if under_load:
            log.warning("decodelab: measured the verify cost of %s while other processes used %.0f%% of the CPU; "
                        "stored as measured under load, to be measured again when the machine is quiet",
                        lm.name, 100 * others)
        _write(path, {"format": _FORMAT, "curve": {str(n): t for n, t in curve.items()}, "others_cpu": others,
                      "under_load": under_load, "measured_at": time.time()})
        _MEMO[key] = curve
        return curve


def measure_cost_curve(lm: LM, sizes: tuple[int, ...], *, context: int = 256,
                       repeats: int = 3) -> tuple[dict[int, float], float]:
    """({n: seconds}, share of the machine's CPU that other processes used meanwhile)."""
    context = max(1, min(context, lm.context_length - max(sizes) - 1))
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, lm.vocab_size, (context,), generator=generator).tolist()
    seq = Sequence(lm, [prompt])
    seq.prefill()
    # once per model, machine and kernel (then cached), but ~15 s for SmolLM2 and longer for larger
    # models: say so on a terminal (the bar redraws twice a second, next to nothing beside the forwards)
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    bar = Progress(console=console, transient=True, refresh_per_second=2, disable=not console.is_terminal)
    task = bar.add_task(f"measuring the verify cost t(n) of {lm.name} (once)", total=len(sizes))
    cpu_before, own_before, wall_before = psutil.cpu_times(), time.process_time(), time.perf_counter()
    with bar:
        curve = _time_forwards(seq, sizes, repeats, generator, lambda: bar.advance(task))
    cpu_after = psutil.cpu_times()
    wall = max(time.perf_counter() - wall_before, 1e-9)
    busy = _busy(cpu_after) - _busy(cpu_before) - (time.process_time() - own_before)
    others = max(0.0, busy) / (wall * (psutil.cpu_count() or 1))
    return curve, min(1.0, others)


def _time_forwards(seq: Sequence, sizes: tuple[int, ...], repeats: int, generator: torch.Generator,
                   done_one: Callable[[], None]) -> dict[int, float]:
    lm = seq.lm
    curve: dict[int, float] = {}
    for n in sizes:
        times = []
        for _ in range(repeats + 1):  # the first run warms up kernels for this shape
            tokens = torch.randint(0, lm.vocab_size, (1, n), generator=generator)
            start = time.perf_counter()
            seq.forward(tokens)
            times.append(time.perf_counter() - start)
            seq.rollback(n)
        # the minimum: other processes can only add time, so it is the closest to this hardware's cost
        curve[n] = min(times[1:])
        done_one()
    return curve


def _busy(times) -> float:
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _read(path) -> dict | None:
    try:
        data = json.loads(path.read_text())
        if data.get("format") != _FORMAT:
            return None  # an older layout (fewer sizes, no load record): measure again
        curve = {int(n): float(t) for n, t in data["curve"].items()}
        if not set(COST_SIZES) <= set(curve):
            return None
        return {"curve": curve, "under_load": bool(data.get("under_load", True))}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write(path, data: dict) -> None:
    """Atomically: a reader sees the old file or the new one, never half of one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache folder costs a re-measurement next time, nothing else
        log.warning("decodelab: could not cache the verify cost curve at %s: %s", path, exc)
