"""scripts/heal_table.py end to end on a tiny model: every method fills its cell (or says how the
library failed), the JSON keeps the command, and `_after_prompt` marks what a method dropped."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "heal_table.py"


def _script():
    spec = importlib.util.spec_from_file_location("heal_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_after_prompt_marks_dropped_characters():
    heal_table = _script()
    assert heal_table._after_prompt("the cat sat", "the cat") == " sat"
    assert heal_table._after_prompt("the catalog", "the cat ") == "[-1]alog"


def test_table_on_tiny_model(tmp_path):
    heal_table = _script()
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(["the ca", "on the m"]))
    out = tmp_path / "heal.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert heal_table.main(["--model", "tiny-random", "--tokens", "3", "--prompts", str(prompts),
                                "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    data = json.loads(out.read_text())
    assert [r["prompt"] for r in data["rows"]] == ["the ca", "on the m"]
    for r in data["rows"]:
        assert all(isinstance(r[k], str) for k in ("plain", "token_healing", "exact", "hf"))
    assert "--prompts" in data["command"]
