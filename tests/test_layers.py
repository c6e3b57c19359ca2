"""The layers of DESIGN.md, checked by reading imports.

The core (`models/`, `engine/`, `sampling/`, `decoding/`, `text.py`) imports no family and no face; a family
(`speculative/`, `constrain/`, `watermark/`, ...) imports no face (`bench/`, `server/`, `batch/`,
`cli.py`). `errors.py` and the package's own `__init__` belong to no layer. Every import counts:
absolute or relative, at module level or inside a function.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "decodelab"
CORE = {"models", "engine", "sampling", "decoding", "text"}
FACES = {"bench", "server", "batch", "cli"}
NO_LAYER = {"errors", "__init__"}


def imported_modules(path: Path, package_root: Path) -> list[tuple[int, str]]:
    """(line, dotted module) for every import in a file, relative ones resolved against the file's
    package; `from decodelab import b` (or `from .. import b` at the top) yields `decodelab.b`."""
    parts = path.relative_to(package_root.parent).with_suffix("").parts
    package = parts[:-1]  # the same for a module and for a package's __init__
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if module == package_root.name:  # `from .. import watermark`: the names are the parts
                found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return found


def layer_part(module: str, package_root: Path) -> str | None:
    """The top-level part of decodelab a dotted module belongs to (`decodelab.watermark.x` ->
    `watermark`), or None for other packages and for names that are not a part of the package."""
    bits = module.split(".")
    if bits[0] != package_root.name or len(bits) < 2:
        return None
    name = bits[1]
    if (package_root / name).is_dir() or (package_root / f"{name}.py").is_file():
        return name
    return None  # a name re-exported by decodelab/__init__ (`from . import load`)


def layer_violations(package_root: Path = PACKAGE) -> dict[str, list[str]]:
    """{"core": [...], "family": [...]}: each entry `file:line imports module`."""
    out: dict[str, set[str]] = {"core": set(), "family": set()}
    for path in sorted(package_root.rglob("*.py")):
        rel = path.relative_to(package_root)
        source = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if source in NO_LAYER:
            continue
        kind = "core" if source in CORE else None if source in FACES else "family"
        if kind is None:
            continue
        for line, module in imported_modules(path, package_root):
            target = layer_part(module, package_root)
            if target is None or target == source or target in NO_LAYER:
                continue
            if (kind == "core" and target not in CORE) or (kind == "family" and target in FACES):
                out[kind].add(f"{path.relative_to(package_root.parent)}:{line} imports {module}")
    return {kind: sorted(found) for kind, found in out.items()}


def test_core_imports_no_family_or_face():
    assert layer_violations()["core"] == []


def test_no_family_imports_a_face():
    assert layer_violations()["family"] == []


def test_planted_imports_are_reported(tmp_path):
    """Negative control: the checker sees a relative import inside a function, an absolute
    import and a `from .. import` of a family, in a copy of the package."""
    root = tmp_path / "decodelab"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    before = layer_violations(root)
    (root / "decoding" / "planted.py").write_text(
        "def f():\n    from ..watermark import x\n    return x\n"
        "import decodelab.speculative.verifiers\n"
        "from .. import constrain\n"
    )
    (root / "watermark" / "planted.py").write_text("from ..bench import suite\n")
    after = layer_violations(root)
    assert sorted(set(after["core"]) - set(before["core"])) == [
        "decodelab/decoding/planted.py:2 imports decodelab.watermark",
        "decodelab/decoding/planted.py:4 imports decodelab.speculative.verifiers",
        "decodelab/decoding/planted.py:5 imports decodelab.constrain",
    ]
    assert sorted(set(after["family"]) - set(before["family"])) == [
        "decodelab/watermark/planted.py:1 imports decodelab.bench",
    ]


def test_allowed_imports_are_not_reported(tmp_path):
    """Core to core, anything to errors.py, a family to the core and a face to a family pass."""
    root = tmp_path / "decodelab"
    for part in ("decoding", "engine", "watermark", "bench"):
        (root / part).mkdir(parents=True)
        (root / part / "__init__.py").write_text("")
    (root / "errors.py").write_text("")
    (root / "decoding" / "a.py").write_text("from ..engine import tree\nfrom ..errors import E\n")
    (root / "watermark" / "a.py").write_text("from ..decoding import a\nfrom . import b\n")
    (root / "bench" / "a.py").write_text("from decodelab.watermark import a\n")
    assert layer_violations(root) == {"core": [], "family": []}
