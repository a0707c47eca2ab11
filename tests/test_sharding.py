"""The split is complete, disjoint, deterministic, balanced and never leaves a shard empty."""

from __future__ import annotations

import json
import random

import pytest

from db_test_action.errors import DbTestActionError
from db_test_action.model import Occurrence, Outcome
from db_test_action.run.sharding import (
    durations_from_occurrences,
    format_durations,
    parse_durations,
    scope_of,
    split_tests,
)


def _suite(modules: int = 20, per_module: int = 15, seed: int = 1) -> tuple[list[str], dict[str, float]]:
    rng = random.Random(seed)
    ids, durations = [], {}
    for m in range(modules):
        for t in range(per_module):
            node = f"tests/test_m{m}.py::TestC{t % 3}::test_{t}"
            ids.append(node)
            durations[node] = rng.lognormvariate(-2.5, 1.2)
    return ids, durations


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 7])
def test_split_is_complete_and_disjoint(shards):
    ids, durations = _suite()
    split = split_tests(ids, durations, shards)
    seen = [n for shard in split.shards for n in shard.node_ids]
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen))
    assert [s.number for s in split.shards] == list(range(1, shards + 1))


def test_split_does_not_depend_on_input_order_of_durations():
    ids, durations = _suite()
    shuffled = dict(sorted(durations.items(), key=lambda kv: random.Random(5).random()))
    assert split_tests(ids, durations, 4).shard_of() == split_tests(ids, shuffled, 4).shard_of()


def test_split_is_balanced_within_one_percent_of_lpt():
    ids, durations = _suite(modules=40, per_module=25)
    split = split_tests(ids, durations, 4)
    ideal = sum(durations.values()) / 4
    assert split.makespan_s / ideal <= 1.01


def test_each_shard_keeps_collection_order():
    ids, durations = _suite()
    for shard in split_tests(ids, durations, 3).shards:
        positions = [ids.index(n) for n in shard.node_ids]
        assert positions == sorted(positions)


@pytest.mark.parametrize("count,shards", [(4, 4), (5, 4), (9, 8), (30, 7)])
def test_no_empty_shard_while_tests_ge_shards_even_with_zero_durations(count, shards):
    ids = [f"t.py::test_{i}" for i in range(count)]
    split = split_tests(ids, dict.fromkeys(ids, 0.0), shards)
    assert all(shard.node_ids for shard in split.shards)


def test_fewer_tests_than_shards_leaves_extra_shards_empty():
    ids = ["t.py::test_a", "t.py::test_b"]
    split = split_tests(ids, {}, 4)
    assert sorted(len(s.node_ids) for s in split.shards) == [0, 0, 1, 1]


def test_small_modules_stay_together_when_balance_allows():
    ids = [f"tests/test_{m}.py::test_{t}" for m in range(8) for t in range(5)]
    split = split_tests(ids, dict.fromkeys(ids, 0.1), 4)
    assert split.unit == "module"
    for shard in split.shards:
        modules = {scope_of(n, "module") for n in shard.node_ids}
        assert len(shard.node_ids) == 5 * len(modules)  # every module whole


def test_unknown_tests_get_the_mean():
    ids = ["a.py::test_known_slow", "a.py::test_known_fast", "a.py::test_new"]
    split = split_tests(ids, {"a.py::test_known_slow": 3.0, "a.py::test_known_fast": 1.0}, 1)
    assert split.shards[0].predicted_s == pytest.approx(6.0)


def test_scope_of_module_and_class():
    assert scope_of("a/test_x.py::TestC::test_y[1]", "class") == "a/test_x.py::TestC"
    assert scope_of("a/test_x.py::TestC::test_y[1]", "module") == "a/test_x.py"
    assert scope_of("a/test_x.py::test_y", "class") == "a/test_x.py"


def test_durations_file_round_trips_in_pytest_split_format():
    text = format_durations({"b.py::test_b": 0.5, "a.py::test_a": 1.25})
    assert list(json.loads(text)) == ["a.py::test_a", "b.py::test_b"]
    assert text.startswith('{\n    "a.py::test_a": 1.25')
    assert parse_durations(text, "f") == {"a.py::test_a": 1.25, "b.py::test_b": 0.5}
    assert parse_durations('[["x.py::test", 2]]', "old") == {"x.py::test": 2.0}


@pytest.mark.parametrize(
    "text,needle",
    [("{", "not JSON"), ('{"t": -1}', "not a duration"), ('"x"', "JSON object"), ("[1]", "pairs")],
)
def test_bad_durations_file_is_a_one_line_error_naming_it(text, needle):
    with pytest.raises(DbTestActionError, match=needle) as info:
        parse_durations(text, ".test_durations")
    assert str(info.value).startswith(".test_durations: ") and "\n" not in str(info.value)


def _occ(test_id, source, duration, attempt=None):
    return Occurrence(test_id, None, None, Outcome.PASSED, None, duration, "", "", source, attempt=attempt)


def test_durations_are_median_of_first_attempts():
    occs = [
        _occ("t.py::a", "run-1", 1.0, 1),
        _occ("t.py::a", "run-1", 9.0, 2),  # a rerun attempt: ignored
        _occ("t.py::a", "run-2", 3.0, 1),
        _occ("t.py::a", "run-3", 2.0, 1),
        _occ("t.py::b", "run-1", 0.5),  # body failure and teardown error: two testcases, summed
        _occ("t.py::b", "run-1", 0.25),
    ]
    assert durations_from_occurrences(occs) == {"t.py::a": 2.0, "t.py::b": 0.75}


def test_invalid_shard_count_is_an_error():
    with pytest.raises(DbTestActionError, match="--shards"):
        split_tests(["a"], {}, 0)
