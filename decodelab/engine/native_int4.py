"""decodelab's own int4 x bfloat16 matrix product for AVX-512 CPUs (source: `int4_avx512.c`).

Why: PyTorch's `_weight_int4pack_mm_for_cpu` reads a 4-bit weight at 15-16 GB/s here, well under
the memory bandwidth that bounds decoding. This kernel unpacks 128 weights with seven vector
instructions and multiplies each 32 with one bfloat16 dot product per activation row (see the C
file), streaming the weights once per 8 rows and sharing each unpacked tile across up to 4 of
them: one row (a decoding step) was ~1.4x cheaper than PyTorch's kernel on Qwen 1.5B, and past 2
rows each further row costs its own dot products (docs/benchmarks.md).
Weight-only 4-bit quantization as in GPTQ (Frantar et al. 2022) / AWQ (Lin et al. 2023).

The C source is compiled on first use with the system's `gcc -O3 -march=native -fopenmp` into
the cache (`$DECODELAB_CACHE/kernels`, keyed by source, compiler and CPU) and loaded with ctypes
(the call releases the GIL). It links the OpenMP runtime PyTorch already loaded, so both share
one thread pool. Without gcc, on a CPU without AVX-512 BF16, or with `DECODELAB_INT4_KERNEL=torch`,
`available()` is False and Int4Linear uses PyTorch's kernel; `status()` says why.

Example:
    >>> from decodelab.engine import native_int4
    >>> isinstance(native_int4.status(), str)
    True
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

from .thread_flag import ThreadFlag

SOURCE = Path(__file__).with_name("int4_avx512.c")
# built into the same library: one decoder layer's glue around the kernel (engine.native_layers)
SOURCES = (SOURCE, Path(__file__).with_name("layer_avx512.c"))
TILE_ROWS = 16
GROUP_TILES = 4  # tiles stored interleaved per 8-column block (the C file's layout)
_lock = threading.Lock()
_state: dict[str, object] = {}
_torch_kernel_forced = ThreadFlag()


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _openmp_runtime() -> Path | None:
    """The libgomp PyTorch ships (linked so both use one OpenMP runtime), if there is one."""
    found = sorted((Path(torch.__file__).parent / "lib").glob("libgomp*.so*"))
    return found[0] if found else None


def _build(target: Path, compiler: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    gomp = _openmp_runtime()
    link = [str(gomp)] if gomp is not None else ["-lgomp"]
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        cmd = [compiler, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-o", str(built),
               *map(str, SOURCES), "-lm", *link]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError((done.stderr or done.stdout).strip().splitlines()[0] if (done.stderr or done.stdout)
                               else f"{compiler} failed")
        os.replace(built, target)  # atomic: concurrent processes never load a half-written file


def _load() -> ctypes.CDLL | None:
    if os.environ.get("DECODELAB_INT4_KERNEL", "").strip().lower() == "torch":
        _state["status"] = "PyTorch's int4 kernel (DECODELAB_INT4_KERNEL=torch)"
        return None
    flags = _cpu_flags().split()
    missing = [f for f in ("avx512f", "avx512bw", "avx512_bf16") if f not in flags]
    if missing:
        _state["status"] = f"PyTorch's int4 kernel (this CPU lacks {', '.join(missing)})"
        return None
    compiler = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if compiler is None:
        _state["status"] = "PyTorch's int4 kernel (no C compiler found to build decodelab's)"
        return None
    from ..models.registry import cache_dir

    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    key = hashlib.sha256("\n".join([*(source.read_text() for source in SOURCES), compiler, *version, " ".join(flags),
                                    torch.__version__])
                         .encode()).hexdigest()[:16]
    target = cache_dir() / "kernels" / f"int4_avx512-{key}.so"
    try:
        if not target.exists():
            _build(target, compiler)
        lib = ctypes.CDLL(str(target))
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        _state["status"] = f"PyTorch's int4 kernel (building decodelab's failed: {err})"
        return None
    fn = lib.int4_bf16_matmul
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 5
    _state["status"] = f"decodelab AVX-512 BF16 int4 kernel ({target.name})"
    _state["build"] = key
    return lib


def _library() -> ctypes.CDLL | None:
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                _state["lib"] = _load()
    return _state["lib"]  # type: ignore[return-value]


def available() -> bool:
    """Whether Int4Linear layers built now use decodelab's kernel (built and usable here, and not
    inside `torch_kernel()`)."""
    return not _torch_kernel_forced and _library() is not None


@contextlib.contextmanager
def torch_kernel() -> Iterator[None]:
    """Int4Linear layers built in this block (this thread) use PyTorch's kernel: for comparisons.

    Example:
        >>> with torch_kernel():
        ...     available()
        False
    """
    with _torch_kernel_forced.on():
        yield


def library() -> ctypes.CDLL | None:
    """The built kernel library (None when PyTorch's kernel is in use; see `status()`)."""
    return _library()


def build_id() -> str:
    """A hash of the kernel's source, compiler, CPU flags and torch ("" when it is not in use): what
    measurements of its speed (speculative.cost's t(n) curves) are keyed by."""
    _library()
    return str(_state.get("build", ""))


def status() -> str:
    """Which int4 kernel Int4Linear uses here, and why."""
    _library()
    return str(_state["status"])


LOW_NIBBLE_COLUMNS = (0, 4, 1, 5)  # of each 8-column block: the byte order of the C file's layout
HIGH_NIBBLE_COLUMNS = (2, 6, 3, 7)


def pack_tiles(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes [N, K] (0..15) and per-group scales/zeros [N, K/g] -> (tiles: N*K/2 bytes in the
    kernel's layout, tile_scales [N/16, K/g, 2, 16] bfloat16); see the C file."""
    n, k = codes.shape
    blocks = codes.to(torch.uint8).reshape(n // TILE_ROWS, TILE_ROWS, k // 8, 8)
    low, high = list(LOW_NIBBLE_COLUMNS), list(HIGH_NIBBLE_COLUMNS)
    by_tile = (blocks[..., low] | (blocks[..., high] << 4)).transpose(1, 2)  # [T, K/8, 16, 4]
    n_tiles = n // TILE_ROWS
    full = n_tiles // GROUP_TILES * GROUP_TILES
    head = by_tile[:full].reshape(-1, GROUP_TILES, k // 8, 64).transpose(1, 2).reshape(-1)
    tail = by_tile[full:].reshape(-1, k // 8, 64).transpose(0, 1).reshape(-1)
    tiles = torch.cat([head, tail])
    sz = torch.stack([scales.float(), zeros.float()], 0).to(torch.bfloat16)  # [2, N, G]
    tile_scales = sz.reshape(2, n_tiles, TILE_ROWS, k // group_size).permute(1, 3, 0, 2).contiguous()
    return tiles, tile_scales


def _by_tile(tiles: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """The flat kernel layout back to [N/16, K/8, 16, 4] bytes."""
    n_tiles = n // TILE_ROWS
    full = n_tiles // GROUP_TILES * GROUP_TILES
    split = full * (k // 8) * 64
    head = tiles[:split].reshape(-1, k // 8, GROUP_TILES, 64).transpose(1, 2).reshape(full, k // 8, 16, 4)
    tail = tiles[split:].reshape(k // 8, n_tiles - full, 64).transpose(0, 1).reshape(n_tiles - full, k // 8, 16, 4)
    return torch.cat([head, tail])


def _columns_of(packed: torch.Tensor) -> torch.Tensor:
    """[..., 4] bytes of 8-column blocks -> [..., 8] codes in column order."""
    columns = torch.empty(*packed.shape[:-1], 8, dtype=torch.uint8)
    columns[..., list(LOW_NIBBLE_COLUMNS)] = packed & 0x0F
    columns[..., list(HIGH_NIBBLE_COLUMNS)] = packed >> 4
    return columns


def unpack_tiles(tiles: torch.Tensor, tile_scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of pack_tiles: (codes [N, K] uint8, scales [N, K/g] float32, zeros [N, K/g] float32)."""
    n = tile_scales.shape[0] * TILE_ROWS
    k = tiles.numel() * 2 // n
    codes = _columns_of(_by_tile(tiles, n, k)).transpose(1, 2).reshape(n, k)
    sz = tile_scales.permute(2, 0, 3, 1).reshape(2, n, -1).float()
    return codes, sz[0], sz[1]


def gather_row_codes(tiles: torch.Tensor, rows: torch.Tensor, out_features: int) -> torch.Tensor:
    """Codes [R, K] (uint8) of the given weight rows, read straight from the flat tiles."""
    k = tiles.numel() * 2 // out_features
    n_tiles = out_features // TILE_ROWS
    tile = rows.to(torch.long) // TILE_ROWS
    first = tile // GROUP_TILES * GROUP_TILES
    in_group = (n_tiles - first).clamp(max=GROUP_TILES)
    unit = torch.arange(k // 8)
    start = (first[:, None] * (k // 8) + unit * in_group[:, None] + (tile - first)[:, None]) * 64
    start = start + (rows.to(torch.long) % TILE_ROWS)[:, None] * 4  # [R, K/8]
    picked = tiles[start[..., None] + torch.arange(4)]  # [R, K/8, 4]
    return _columns_of(picked).reshape(rows.numel(), k)


def int8_shape_ok(out_features: int, in_features: int) -> bool:
    """Whether an 8-bit weight of this shape can run on the kernel as two 4-bit halves."""
    return out_features % TILE_ROWS == 0 and in_features % 8 == 0


def int8_group_size(in_features: int) -> int:
    """The widest group dividing the input width (one scale per channel: fewer scale bytes)."""
    return next(g for g in (256, 128, 64, 32, 16, 8) if in_features % g == 0)


def split_int8(codes: torch.Tensor, scales: torch.Tensor, group_size: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel 8-bit codes c [N, K] (scale s [N]) -> one 4-bit weight [N, 2K] over [x; x]:
    c + 128 = 16 h + l, so s c = 16 s (h - 8) + s (l - 8) + 8 s. Returns (codes, scales, zeros)
    per group for pack_tiles."""
    n, k = codes.shape
    unsigned = (codes.to(torch.int16) + 128).to(torch.uint8)
    wide = torch.cat([unsigned >> 4, unsigned & 0x0F], 1)
    s = scales.float()[:, None].expand(n, k // group_size)
    return wide, torch.cat([16 * s, s], 1), torch.cat([torch.zeros_like(s), 8 * s], 1)


def join_int8(wide: torch.Tensor) -> torch.Tensor:
    """Inverse of split_int8's codes: [N, 2K] halves -> int8 codes [N, K]."""
    k = wide.shape[1] // 2
    return (16 * wide[:, :k].to(torch.int16) + wide[:, k:].to(torch.int16) - 128).to(torch.int8)


def int4_matmul(x: torch.Tensor, tiles: torch.Tensor, tile_scales: torch.Tensor, group_size: int) -> torch.Tensor:
    """x [M, K] bfloat16 times the packed weight's transpose -> [M, N] bfloat16."""
    lib = _library()
    if lib is None:
        raise RuntimeError(status())
    m, k = x.shape
    n = tile_scales.shape[0] * TILE_ROWS
    if tiles.numel() * 2 != n * k or tiles.dtype != torch.uint8:
        raise ValueError(f"x has {k} columns; the packed weight holds {tiles.numel() * 2} codes for {n} rows")
    x = x.to(torch.bfloat16).contiguous()
    out = torch.empty(m, n, dtype=torch.bfloat16)
    if m == 0:
        return out
    code = lib.int4_bf16_matmul(x.data_ptr(), tiles.data_ptr(), tile_scales.data_ptr(), out.data_ptr(),
                                m, n, k, group_size, torch.get_num_threads())
    if code != 0:
        raise RuntimeError(f"int4 kernel failed (code {code}) for x {tuple(x.shape)}, weight {n}x{k}, group {group_size}")
    return out
