"""Convert a GGUF file once into a float32 safetensors folder, so later loads take ~1 s.

transformers can read GGUF directly but spends 15-75 s parsing and dequantising it; the cached
folder is a plain Hugging Face model directory. The conversion is written to a temporary folder
and renamed into place, so an interrupted conversion never leaves a half-written cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import ModelNotFound
from .registry import cache_dir

MARKER = "decodelab-cache.json"


def cache_key(gguf_files: list[Path]) -> str:
    """A key that changes when any source file changes (path, size, mtime)."""
    digest = hashlib.sha256()
    for path in gguf_files:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{int(stat.st_mtime)}".encode())
    return digest.hexdigest()[:16]


def cached_folder(slug: str, gguf_files: list[Path]) -> Path:
    return cache_dir() / "models" / f"{slug}-{cache_key(gguf_files)}"


def joined(gguf_files: list[Path]) -> Path:
    """One GGUF file for split parts (joined once into the cache; a single file is returned as is).
    The quantized loaders read the file's own codes from it (`weights="auto"/"int4"`)."""
    if len(gguf_files) == 1:
        return gguf_files[0]
    target = cache_dir() / "gguf-v1" / f"{gguf_files[0].stem}-{cache_key(gguf_files)}.gguf"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".partial-{os.getpid()}")
    with open(partial, "wb") as out:
        for part in gguf_files:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 16 << 20)
    partial.rename(target)
    return target


def is_cached(folder: Path) -> bool:
    return (folder / MARKER).exists()


def convert(gguf_files: list[Path], folder: Path, *, progress: bool = True) -> Path:
    """Join split parts if needed, load with transformers and save as safetensors in `folder`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=folder.parent))
    try:
        steps = ["join parts", "read tokenizer", "read weights", "write safetensors"]
        from rich.progress import Progress

        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(f"converting {gguf_files[0].name} (once)", total=len(steps))
            if len(gguf_files) == 1:
                source = gguf_files[0]
            else:
                source = work / "joined.gguf"
                with open(source, "wb") as out:
                    for part in gguf_files:
                        with open(part, "rb") as src:
                            shutil.copyfileobj(src, out, 16 << 20)
            bar.advance(task)
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
                bar.advance(task)
                model = AutoModelForCausalLM.from_pretrained(
                    str(source.parent), gguf_file=source.name, dtype=torch.float32
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                first = (str(exc).splitlines() or ["unreadable file"])[0]
                raise ModelNotFound(f"could not read '{gguf_files[0]}' as a GGUF model: {first}") from exc
            bar.advance(task)
            # A GGUF-loaded model refuses to serialise while it remembers its quantiser;
            # the weights are already dequantised to float32, so forgetting it is safe.
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            out_dir = work / "model"
            model.save_pretrained(out_dir)
            tokenizer.save_pretrained(out_dir)
            (out_dir / MARKER).write_text(json.dumps({"sources": [str(p) for p in gguf_files]}))
            bar.advance(task)
        if folder.exists():
            shutil.rmtree(folder)
        (work / "model").rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder
