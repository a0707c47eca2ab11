"""History file: round trip, replacement of a re-run night, the cap, id compaction, size, and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from db_test_action.commands.files import read_history_file, write_history_file
from db_test_action.errors import DbTestActionError
from db_test_action.stability.history import (
    add_night,
    dump_history,
    parse_history,
)
from db_test_action.stability.nightly import TestCounts, night_from_counts

CLEAN = TestCounts(3, 3, 0, 0, 0, 0)
FLAKY = TestCounts(3, 1, 1, 1, 2, 1)


def _night(label: str, ids: list[str], bad: dict[str, TestCounts] | None = None, runs=(True, True, False)):
    counts = {tid: CLEAN for tid in ids} | (bad or {})
    return night_from_counts(label, runs, counts, {"deadlock": 2} if bad else {}, commit="abc123")


def test_round_trip_is_exact(tmp_path: Path) -> None:
    nights = (
        _night("2025-01-01", ["t::a", "t::b", "t::c"], {"t::b": FLAKY}),
        _night("2025-01-02", ["t::a", "t::c", "t::d"], runs=(True,)),
        _night("2025-01-03", ["t::a", "t::b", "t::c", "t::d", "weird id with spaces [é|`@x`]"]),
    )
    path = tmp_path / "sub" / "history.jsonl"
    write_history_file(path, nights)
    assert read_history_file(path) == nights
    assert not list(path.parent.glob(".*.tmp"))  # written through a temporary file


def test_each_night_is_one_line_and_ids_are_ranges() -> None:
    ids = [f"tests/test_m.py::test_{i:04d}" for i in range(1000)]
    text = dump_history([_night("n1", ids), _night("n2", ids[:500] + ids[600:])])
    header, first, second = (json.loads(line) for line in text.splitlines())
    assert header["format"] == "db-test-action-history" and len(header["ids"]) == 1000
    assert first["present"] == [[0, 1000]]
    assert second["present"] == [[0, 500], [600, 1000]]
    assert first["clean"] == [3, 3, 0, 0, 0, 0] and first["odd"] == [] and first["runs"] == "GGx"


def test_identical_test_sets_share_memory_after_loading() -> None:
    ids = ["a::x", "a::y"]
    loaded = parse_history(dump_history([_night("1", ids), _night("2", ids)]), "h")
    assert loaded[0].present is loaded[1].present


def test_same_label_replaces_and_cap_keeps_the_newest() -> None:
    nights = ()
    for day in range(1, 8):
        nights = add_night(nights, _night(f"d{day}", ["t::a"]), keep=5)
    assert [n.label for n in nights] == ["d3", "d4", "d5", "d6", "d7"]
    rerun = _night("d7", ["t::a"], {"t::a": FLAKY})
    nights = add_night(nights, rerun, keep=5)
    assert [n.label for n in nights] == ["d3", "d4", "d5", "d6", "d7"] and nights[-1] == rerun


def test_ids_of_dropped_nights_leave_the_file() -> None:
    nights = add_night((_night("old", ["t::gone", "t::kept"]),), _night("new", ["t::kept"]), keep=1)
    header = json.loads(dump_history(nights).splitlines()[0])
    assert header["ids"] == ["t::kept"]


def test_a_year_of_5000_tests_stays_small() -> None:
    ids = [f"tests/test_mod_{i % 40}.py::TestClass::test_case_{i}" for i in range(5000)]
    nights = [_night(f"d{i}", ids, {ids[(i * 7) % 5000]: FLAKY}) for i in range(365)]
    size = len(dump_history(nights).encode())
    assert size < 500_000, size  # id table ~250 KB + ~100 bytes per night


def test_missing_file_is_the_first_night(tmp_path: Path) -> None:
    assert read_history_file(tmp_path / "nope.jsonl") is None
    assert parse_history("", "empty") == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not json\n", "h.jsonl:1: not JSON"),
        ('{"format": "other"}\n', "h.jsonl:1: not a db-test-action history"),
        ('{"format": "db-test-action-history", "version": 9, "ids": []}\n', "h.jsonl:1: history version 9"),
        (
            '{"format": "db-test-action-history", "version": 1, "ids": ["a"]}\n{"night": "x", "present": [[0, 5]], "clean": [1,1,0,0,0,0]}\n',
            "h.jsonl:2: malformed night (IndexError: range 0..5 outside the id table)",
        ),
        (
            '{"format": "db-test-action-history", "version": 1, "ids": ["a"]}\n{"night": "x", "present": [], "clean": [1,1]}\n',
            "h.jsonl:2: malformed night (ValueError: counts must be 6 whole numbers",
        ),
        (
            '{"format": "db-test-action-history", "version": 1, "ids": []}\n{"night": "x", "present": [], "clean": [0,0,0,0,0,0], "runs": "GR"}\n',
            "h.jsonl:2: malformed night (ValueError: runs must be a string of G and x",
        ),
    ],
)
def test_bad_history_is_a_one_line_error_naming_the_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DbTestActionError) as info:
        read_history_file(path)
    message = str(info.value).replace(str(tmp_path) + "/", "")
    assert message.startswith(expected), message
    assert "\n" not in message
