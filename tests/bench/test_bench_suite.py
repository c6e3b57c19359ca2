"""Prompt suites: packaged suites load with the documented counts; bad files raise SuiteError."""

from __future__ import annotations

import json

import pytest

import decodelab as dl
from decodelab.bench import SuiteError, available_suites, load_suite


def _write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def _row(i, category="qa", **extra):
    row = {"id": f"p{i}", "category": category, "source": "test", "messages": [{"role": "user", "content": f"q{i}"}]}
    row.update(extra)
    return row


def test_packaged_suites_have_documented_counts():
    assert {"quick", "specbench_mini"} <= set(available_suites())
    full = load_suite("specbench_mini")
    assert len(full) == 72
    assert full.counts() == {c: 12 for c in ["multi_turn", "translation", "summarization", "qa", "math", "rag"]}
    quick = load_suite("quick")
    assert len(quick) == 6 and set(quick.counts().values()) == {1}
    # SOURCES.md: quick rows are exact copies of rows of the main suite.
    by_id = {p.id: p for p in full}
    for prompt in quick:
        assert by_id[prompt.id] == prompt


def test_per_category_keeps_first_n_in_file_order():
    full = load_suite("specbench_mini")
    two = load_suite("specbench_mini", per_category=2)
    assert len(two) == 12 and set(two.counts().values()) == {2}
    expected = []
    for category in full.categories:
        expected += [p.id for p in full if p.category == category][:2]
    assert sorted(p.id for p in two) == sorted(expected)
    ids = [p.id for p in full]
    assert [p.id for p in two] == sorted((p.id for p in two), key=ids.index)  # file order kept
    one = [p.id for p in load_suite("specbench_mini", per_category=1)]
    assert [p.id for p in load_suite("specbench_mini", per_category=1, limit=4)] == one[:4]


def test_suite_from_path(tmp_path):
    path = _write(tmp_path / "mine.jsonl", [_row(1), _row(2, "math"), "", _row(3)])
    suite = load_suite(str(path))
    assert [p.id for p in suite] == ["p1", "p2", "p3"]
    assert suite.counts() == {"qa": 2, "math": 1}
    assert suite.prompts[0].messages == [{"role": "user", "content": "q1"}]


@pytest.mark.parametrize(
    "rows, message",
    [
        (["{not json"], "line 1: not valid JSON"),
        ([_row(1), "[1, 2]"], "line 2: each line must be a JSON object"),
        ([{"id": "x", "category": "qa"}], "'messages'"),
        ([_row(1, messages=[{"role": "user"}])], "string 'role' and 'content'"),
        ([_row(1, category="")], "'category'"),
        ([_row(1), _row(1)], "duplicate id 'p1'"),
        ([""], "holds no prompts"),
    ],
)
def test_malformed_suite_raises_suite_error(tmp_path, rows, message):
    path = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(SuiteError, match=message) as info:
        load_suite(path)
    assert isinstance(info.value, dl.DecodelabError)


def test_missing_suite_and_bad_counts(tmp_path):
    with pytest.raises(SuiteError, match="unknown suite 'nope'"):
        load_suite("nope")
    with pytest.raises(SuiteError):
        load_suite(tmp_path / "missing.jsonl")
    with pytest.raises(SuiteError, match="not a file"):
        load_suite(tmp_path)
    with pytest.raises(dl.InvalidOption):
        load_suite("quick", per_category=0)
