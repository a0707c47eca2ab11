"""Stability core: Wilson intervals, statuses across nights, streaks, the compact Night, and per-session
counts from real pytest JUnit (two sessions, with a rerun, fixture errors and a skip)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from pytest_runs import run_pytest

from db_test_action.junit.files import parse_junit_file
from db_test_action.stability.nightly import (
    Observed,
    ObservedTest,
    SuiteRun,
    TestCounts,
    night_from_counts,
    night_of,
    observe,
    suite_runs,
    trend_points,
)
from db_test_action.stability.rates import (
    NightVerdict,
    Stability,
    StabilitySettings,
    build_stability,
    classify_stability,
    parse_gates,
    trailing_true,
    wilson,
    window_totals,
)

CLEAN = TestCounts(4, 4, 0, 0, 0, 0)
ONE_BAD = TestCounts(4, 3, 1, 0, 0, 0)
NEVER = TestCounts(4, 0, 4, 0, 0, 0)


# --- statistics --------------------------------------------------------------------------------------------


def test_wilson_matches_the_textbook_values() -> None:
    # Wilson 95 % for 1/10: 0.0179–0.4042 (Newcombe 1998, method 3); 0/20 still allows up to ~16 %.
    rate = wilson(1, 10)
    assert (round(rate.low, 4), round(rate.high, 4)) == (0.0179, 0.4042)
    zero = wilson(0, 20)
    assert zero.low == 0.0 and round(zero.high, 3) == 0.161
    assert wilson(5, 5).high == 1.0 and round(wilson(5, 5).low, 3) == 0.566
    assert wilson(0, 0).runs == 0 and wilson(0, 0).value == 0.0


def test_interval_narrows_with_more_runs() -> None:
    few, many = wilson(2, 20), wilson(20, 200)
    assert few.value == many.value
    assert many.high - many.low < few.high - few.low


# --- statuses ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tonight", "previous", "expected"),
    [
        (CLEAN, [CLEAN, CLEAN], Stability.STABLE),
        (CLEAN, [], Stability.STABLE),
        (NEVER, [CLEAN], Stability.BROKEN),
        (TestCounts(4, 0, 2, 2, 4, 4), [CLEAN], Stability.NEWLY_FLAKY),  # every run saved by a rerun: flaky
        (ONE_BAD, [CLEAN, CLEAN], Stability.NEWLY_FLAKY),
        (ONE_BAD, [ONE_BAD, CLEAN], Stability.FLAKY),
        (ONE_BAD, [], Stability.FLAKY),  # a new test: nothing to be "newly" flaky against
        (ONE_BAD, [None, None], Stability.FLAKY),
        (CLEAN, [ONE_BAD, CLEAN], Stability.FLAKY),  # 2 clean nights < recover_after 3
        (CLEAN, [ONE_BAD, CLEAN, CLEAN], Stability.RECOVERED),
        (CLEAN, [ONE_BAD, CLEAN, None, CLEAN], Stability.RECOVERED),  # absent nights do not count
        (CLEAN, [NEVER], Stability.RECOVERED),  # fixed right after being broken
    ],
)
def test_status_from_tonight_and_earlier_nights(tonight, previous, expected) -> None:
    assert classify_stability(tonight, previous, recover_after=3) is expected


def test_trailing_true_counts_the_last_run_only() -> None:
    assert trailing_true([True, False, True, True]) == 2
    assert trailing_true([True, True, False]) == 0
    assert trailing_true([]) == 0


def test_gates_parse_and_reject_typos() -> None:
    assert parse_gates("broken, consecutive") == ("broken", "consecutive")
    assert parse_gates("none") == ()
    with pytest.raises(ValueError):
        parse_gates("brokn")


# --- the compact night ---------------------------------------------------------------------------------------


def test_night_keeps_only_odd_tests_beside_the_common_counts() -> None:
    counts = {f"t{i}": CLEAN for i in range(10)} | {"t3": ONE_BAD, "skipped": TestCounts()}
    night = night_from_counts("n1", [True, False], counts, {"deadlock": 2})
    assert night.clean == CLEAN
    assert night.odd == (("t3", ONE_BAD),)
    assert "skipped" not in night.present and len(night.present) == 10
    assert night.counts_of("t3") == ONE_BAD and night.counts_of("t4") == CLEAN
    assert night.counts_of("skipped") is None
    assert not night.is_clean


def test_window_totals_equal_the_naive_sum() -> None:
    nights = [
        night_from_counts("a", [True], {"x": CLEAN, "y": ONE_BAD, "z": CLEAN}),
        night_from_counts("b", [True], {"x": TestCounts(2, 2, 0, 0, 0, 0), "y": CLEAN}),
        night_from_counts("c", [False], {"x": NEVER, "y": NEVER, "z": NEVER}),  # clean itself is bad
    ]
    totals, seen, bad = window_totals(nights)
    for tid in ("x", "y", "z"):
        naive = [0] * 6
        for night in nights:
            counts = night.counts_of(tid)
            if counts:
                naive = [a + b for a, b in zip(naive, counts.as_tuple(), strict=True)]
        assert totals[tid].as_tuple() == tuple(naive), tid
    assert seen == Counter({"x": 3, "y": 3, "z": 2})
    assert bad == {"y": [0, 2], "x": [2], "z": [2]}


def test_trend_points_count_flaky_and_broken_per_night() -> None:
    night = night_from_counts("n", [True, False], {"a": CLEAN, "b": ONE_BAD, "c": NEVER, "d": CLEAN})
    (point,) = trend_points([night])
    assert (point.tests, point.flaky_tests, point.broken_tests) == (4, 1, 1)
    assert (point.runs, point.green_runs, point.test_runs, point.bad_test_runs) == (2, 1, 16, 5)


# --- the report ------------------------------------------------------------------------------------------------


def _observed(counts: dict[str, TestCounts], runs: list[bool]) -> Observed:
    tests = tuple(ObservedTest(tid, tid.split("::")[0], c) for tid, c in sorted(counts.items()))
    return Observed(tests, tuple(SuiteRun(i + 1, 1, 0 if g else 1, True) for i, g in enumerate(runs)), ())


def test_report_statuses_streaks_and_quarantine_across_nights() -> None:
    history = [
        night_from_counts(
            "d1", [True, True], {"a::t": CLEAN, "b::t": ONE_BAD, "c::t": CLEAN, "d::t": ONE_BAD}
        ),
        night_from_counts(
            "d2", [True, True, True], {"a::t": CLEAN, "b::t": CLEAN, "c::t": CLEAN, "d::t": CLEAN}
        ),
    ]
    tonight_counts = {"a::t": CLEAN, "b::t": ONE_BAD, "c::t": ONE_BAD, "d::t": CLEAN, "e::t": NEVER}
    observed = _observed(tonight_counts, [True, False])
    tonight = night_of(observed, "d3")
    settings = StabilitySettings(
        window=14, recover_after=3, require_consecutive=3, fail_on=("consecutive", "broken")
    )
    report = build_stability(observed, tonight, history, settings)
    status = {t.test_id: t.status for t in report.tests}
    assert status == {
        "a::t": Stability.STABLE,
        "b::t": Stability.FLAKY,
        "c::t": Stability.NEWLY_FLAKY,
        "d::t": Stability.FLAKY,  # 2 clean nights since its bad one: not yet recovered
        "e::t": Stability.BROKEN,
    }
    assert [t.test_id for t in report.tests][:1] == ["e::t"]  # worst first
    b = next(t for t in report.tests if t.test_id == "b::t")
    assert b.window == TestCounts(12, 10, 2, 0, 0, 0) and b.bad_nights == 2 and b.nights == 3
    assert report.consecutive_green == 0  # tonight's last run was red
    assert report.verdict is NightVerdict.BROKEN
    assert report.gate_failures == ("consecutive", "broken")
    assert report.quarantine == ("b::t", "c::t", "d::t")
    assert report.clean_nights == 0 and report.window_nights == 3
    assert [p.label for p in report.trend] == ["d1", "d2", "d3"]


def test_green_streak_spans_nights_and_window_limits_rates() -> None:
    history = [night_from_counts(f"d{i}", [True] * 2, {"a::t": CLEAN}) for i in range(5)]
    history[0] = night_from_counts("d0", [True, False], {"a::t": ONE_BAD})
    observed = _observed({"a::t": CLEAN}, [True, True])
    report = build_stability(
        observed, night_of(observed, "tonight"), history, StabilitySettings(window=3, require_consecutive=9)
    )
    assert report.consecutive_green == 10  # 4 earlier nights × 2 + tonight's 2
    assert report.clean_nights == 5
    (test,) = report.tests
    assert test.window.runs == 12 and test.status is Stability.STABLE  # d0 is outside the 3-night window
    assert report.gate_failures == () and report.verdict is NightVerdict.GREEN


def test_same_label_replaces_the_earlier_night() -> None:
    observed = _observed({"a::t": ONE_BAD}, [False])
    first = night_of(observed, "2025-01-01")
    report = build_stability(observed, first, [first], StabilitySettings())
    assert report.window_nights == 1 and report.tests[0].window == ONE_BAD


# --- tonight from real JUnit -----------------------------------------------------------------------------------

SUITE = {
    "conftest.py": """
        import os, pytest

        RUN = os.environ["RUN"]

        @pytest.fixture
        def setup_breaks_on_run_1():
            if RUN == "1":
                raise RuntimeError("duplicate key value violates unique constraint \\"workspaces_pkey\\"")
            yield

        @pytest.fixture
        def teardown_breaks():
            yield
            raise RuntimeError("cannot drop table workspaces because other objects depend on it")
    """,
    "test_things.py": """
        import os, pathlib, pytest

        def test_ok():
            pass

        def test_fails_on_run_2():
            assert os.environ["RUN"] != "2"

        def test_setup(setup_breaks_on_run_1):
            pass

        def test_teardown(teardown_breaks):
            pass

        def test_saved_by_rerun():
            mark = pathlib.Path(f"attempted-{os.environ['RUN']}")
            if not mark.exists():
                mark.write_text("x")
                raise AssertionError("first attempt fails")

        @pytest.mark.skip(reason="not tonight")
        def test_skipped():
            pass
    """,
}


def test_observe_counts_sessions_from_real_junit(tmp_path: Path) -> None:
    files = [
        run_pytest(
            tmp_path / f"r{run}",
            SUITE,
            "--reruns",
            "1",
            junit=f"shard-1-run-{run}.xml",
            env={"RUN": str(run)},
        )
        for run in (1, 2)
    ]
    observed = observe([parse_junit_file(f) for f in files])
    counts = {t.test_id: t.counts for t in observed.tests}
    assert counts["test_things.py::test_ok"] == TestCounts(2, 2, 0, 0, 0, 0)
    assert counts["test_things.py::test_fails_on_run_2"] == TestCounts(2, 1, 1, 0, 1, 0)
    assert counts["test_things.py::test_setup"] == TestCounts(2, 1, 0, 1, 1, 0)
    assert counts["test_things.py::test_teardown"] == TestCounts(2, 0, 0, 2, 2, 0)
    assert counts["test_things.py::test_saved_by_rerun"] == TestCounts(2, 0, 2, 0, 2, 2)
    assert "test_things.py::test_skipped" not in counts
    assert [(r.run, r.is_green, r.bad_tests) for r in observed.runs] == [(1, False, 3), (2, False, 3)]
    setup = next(t for t in observed.tests if t.test_id.endswith("test_setup"))
    assert [c.key for c in setup.causes] == ["unique-violation"]
    teardown = next(t for t in observed.tests if t.test_id.endswith("test_teardown"))
    assert teardown.causes[0].key == "dependent-objects"
    assert night_of(observed, "n").odd  # the night keeps them


def test_a_missing_shard_or_broken_file_makes_the_run_incomplete(tmp_path: Path) -> None:
    suite = {"test_a.py": "def test_a():\n    pass\n"}
    files = [
        run_pytest(tmp_path / f"s{s}r{r}", suite, junit=f"shard-{s}-run-{r}.xml")
        for s, r in ((1, 1), (2, 1), (1, 2))
    ]
    broken = tmp_path / "shard-2-run-3.xml"
    broken.write_text("<testsuites><testsuite name='pytest'><testcase", encoding="utf-8")
    observed = observe([parse_junit_file(f) for f in [*files, broken]], expected_runs=4)
    assert [(r.run, r.is_complete) for r in observed.runs] == [(1, True), (2, False), (3, False), (4, False)]
    assert observed.problems and "shard-2-run-3.xml" in str(observed.problems[0])


def test_artifact_directories_number_the_runs_of_matrix_jobs_apart(tmp_path: Path) -> None:
    """Nightly matrix: each (run R, shard S) job ran `--repeat 2` and named its runs 1..2."""
    suite = {"test_a.py": "def test_a():\n    pass\n"}
    files = [
        run_pytest(tmp_path / f"nightly-1-run-{r}-shard-{s}", suite, junit=f"shard-{s}-run-{k}.xml")
        for r in (1, 2)
        for s in (1, 2)
        for k in (1, 2)
    ]
    parsed = [parse_junit_file(f) for f in files]
    assert suite_runs(parsed) == [1, 2, 1, 2, 3, 4, 3, 4]
    observed = observe(parsed)
    assert [(r.run, r.sessions, r.is_green) for r in observed.runs] == [(i, 2, True) for i in (1, 2, 3, 4)]
    assert observed.tests[0].counts == TestCounts(8, 8, 0, 0, 0, 0)
