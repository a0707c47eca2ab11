"""Tests → the per-category count columns, their sum, and the quarantine list. Pure.

Split from build.py (the assembly of the `Report`) to keep modules small. Reports of 100,000 tests are
common and most are clean `TestResultRow`s: they are counted by (category, status) in C; only the full
results (problems, quarantine) are looked at one by one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import compress, repeat
from operator import attrgetter, is_not

from db_test_action.junit.attempts import TestResultRow
from db_test_action.model import Counts, Outcome, Phase, Status, TestResult

_CATEGORY, _STATUS = attrgetter("category"), attrgetter("status")
_COLUMN = {
    Status.PASSED: "passed",
    Status.FAILED: "failed",
    Status.SETUP_ERROR: "setup_errors",
    Status.TEARDOWN_ERROR: "teardown_errors",
    Status.FLAKY: "flaky",
    Status.SKIPPED: "skipped",
    Status.XFAILED: "xfailed",
}

_STATUS_COLUMNS = ("passed", "failed", "flaky", "skipped", "xfailed")
_FIXTURE_COLUMNS = ("setup_errors", "teardown_errors", "setup_errors_flaky", "teardown_errors_flaky")


def fixture_error_phases(test: TestResult) -> tuple[bool, bool]:
    """(setup, teardown): did any attempt of this test error in that phase? (quarantined xfails do not)"""
    setup = test.status is Status.SETUP_ERROR
    teardown = test.status is Status.TEARDOWN_ERROR
    for problem in test.problems:
        if problem.outcome is Outcome.XFAILED:
            continue
        setup |= problem.phase is Phase.SETUP
        teardown |= problem.phase is Phase.TEARDOWN
    return setup, teardown


def count_by_category(tests: Sequence[TestResult], durations: Mapping[str, float]) -> tuple[Counts, ...]:
    """Status columns hold each test once; fixture-error columns every test that errored in that phase in
    any attempt (see Counts) — pytest's own "1 failed, 1 error" for a body failure plus a teardown error."""
    columns: dict[str, dict[str, int]] = {}
    quarantine: dict[str, dict[str, int]] = {}
    # Tests per category, and per (category, status) for those that did not pass, counted in C: 100,000
    # tests are common, most passed, and a status (an Enum) hashes in Python.
    new_counts = dict.fromkeys(("tests", *_STATUS_COLUMNS, *_FIXTURE_COLUMNS), 0)
    for category, n in Counter(map(_CATEGORY, tests)).items():
        columns[category] = {**new_counts, "tests": n, "passed": n}
    unpassed = list(compress(tests, map(is_not, map(_STATUS, tests), repeat(Status.PASSED))))
    for (category, status), n in Counter(
        zip(map(_CATEGORY, unpassed), map(_STATUS, unpassed), strict=True)
    ).items():
        counts = columns[category]
        counts["passed"] -= n
        if (column := _COLUMN[status]) in _STATUS_COLUMNS:
            counts[column] += n
    # The fixture-error and quarantine columns: a clean row (the commonest) has neither, and is skipped in C.
    for test in compress(tests, map(is_not, map(type, tests), repeat(TestResultRow))):
        counts = columns[test.category]
        column = _COLUMN[test.status]
        if test.problems or column not in _STATUS_COLUMNS:
            setup, teardown = fixture_error_phases(test)
            flaky = test.status is Status.FLAKY
            counts["setup_errors"] += setup
            counts["teardown_errors"] += teardown
            counts["setup_errors_flaky"] += setup and flaky
            counts["teardown_errors_flaky"] += teardown and flaky
        if test.is_quarantined:
            q = quarantine.setdefault(test.category, dict.fromkeys(_QUARANTINE_COLUMNS, 0))
            q["quarantined"] += 1
            if q_column := _quarantine_column(test):
                q[q_column] += 1
    return tuple(
        Counts(
            name=name,
            duration_s=durations.get(name, 0.0),
            **columns[name],
            **quarantine.get(name, {}),
        )
        for name in sorted(columns)
    )


_QUARANTINE_COLUMNS = ("quarantined", "quarantined_failed", "quarantined_passed")


def _quarantine_column(test: TestResult) -> str:
    """Failed: the quarantine turned a failure into an xfail (or it failed outright); passed: it ran clean."""
    if test.problems or test.status.is_problem:
        return "quarantined_failed"
    return "quarantined_passed" if test.status is Status.PASSED else ""


def sum_counts(counts: Sequence[Counts], name: str, duration_s: float) -> Counts:
    columns = {
        column: sum(getattr(c, column) for c in counts) for column in (*_STATUS_COLUMNS, *_FIXTURE_COLUMNS)
    }
    quarantine = {column: sum(getattr(c, column) for c in counts) for column in _QUARANTINE_COLUMNS}
    return Counts(
        name=name, tests=sum(c.tests for c in counts), duration_s=duration_s, **columns, **quarantine
    )


def quarantined_tests(tests: Sequence[TestResult]) -> tuple[TestResult, ...]:
    """The tests on the `--quarantine` list: those that failed first (setup, call, teardown), then the rest."""
    order = {"quarantined_failed": 0, "quarantined_passed": 1, "": 2}

    def rank(test: TestResult) -> tuple[int, int, str]:
        phase = min((_PHASE_RANK[p.phase] for p in test.problems), default=9)
        return order[_quarantine_column(test)], phase, test.test_id

    return tuple(sorted((t for t in tests if t.is_quarantined), key=rank))


_PHASE_RANK = {Phase.SETUP: 0, Phase.CALL: 1, Phase.TEARDOWN: 2}
