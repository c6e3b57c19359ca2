"""Shared by the batch tests: a small dataset with rows that fail, the job that runs it, and
killing worker processes."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from pathlib import Path

import psutil

from decodelab.batch import JobSpec

# init_std 0.5: peaked enough that generated texts differ visibly from seed to seed
TINY = {"vocab_size": 64, "init_std": 0.5, "seed": 3}


def write_dataset(path: Path, rows: int = 14) -> list[str]:
    """`rows` prompts (ids r0, r1, ...) plus a too-long prompt, a row with a bad option, a line
    that is not JSON and a row without an id; returns every id as text, in input order."""
    lines = [json.dumps({"id": f"r{i}", "prompt": f"hello {i}"}) for i in range(rows)]
    lines += [json.dumps({"id": "too-long", "prompt": "x" * 600}),
              json.dumps({"id": "bad-option", "prompt": "hi", "options": {"top_p": 7}}),
              "{not json",
              json.dumps({"prompt": "no id here"})]
    path.write_text("\n".join(lines) + "\n")
    return [f"r{i}" for i in range(rows)] + ["too-long", "bad-option", str(rows + 3), str(rows + 4)]


def generate_spec(max_new_tokens: int = 12) -> JobSpec:
    # one thread per worker: on a loaded 2-core machine two threads per tiny forward cost 30x more
    return JobSpec("generate", model="tiny-random", model_options=TINY, seed=7, threads=1,
                   options={"max_new_tokens": max_new_tokens, "temperature": 1.0})


def ids_in(output: Path) -> list[str]:
    return [str(json.loads(line)["id"]) for line in output.read_text().splitlines()]


def assert_each_id_once(output: Path, expected: list[str]) -> None:
    ids = ids_in(output)
    assert [i for i, n in Counter(ids).items() if n > 1] == []
    assert ids == expected


def kill_processes(match: str, *, children_only: bool = False) -> list[int]:
    """SIGKILL every descendant of this process whose command line contains `match` (with
    `children_only`: the children of those processes instead, e.g. what a fork server forked)."""
    killed = []
    for process in psutil.Process().children(recursive=True):
        try:
            if match not in " ".join(process.cmdline()):
                continue
            for target in process.children() if children_only else [process]:
                os.kill(target.pid, signal.SIGKILL)
                killed.append(target.pid)
        except psutil.Error:
            pass
    return killed
