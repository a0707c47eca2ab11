"""Occurrences → one TestResult per test id: reruns, repeats and teardown-after-failure folded in. Pure.

Split from junit.py (which reads files); the rules here encode what pytest actually writes:
a body failure plus a teardown error is two <testcase> elements of one attempt, and under
pytest-rerunfailures every earlier attempt is an extra *empty* <testcase> whose failure is not recorded.
"""

from __future__ import annotations

import re
from collections import namedtuple
from collections.abc import Callable, Iterator, Sequence
from itertools import compress, repeat
from operator import attrgetter, is_not
from typing import cast

from db_test_action.junit.reader import PassRow
from db_test_action.model import Cause, Occurrence, Outcome, Phase, Problem, Status, TestResult

_FRAME_RE = re.compile(r"([^\s:]+\.py):(\d+): ")  # a line's start; not absolute, not in site-packages


# --- grouping ------------------------------------------------------------------------------------------


class TestResultRow(
    namedtuple("TestResultRow", ["test_id", "category", "file", "line", "status", "duration_s"])
):
    """A test that ran once, cleanly (passed, skipped, xfailed): the 6 fields of a `TestResult` that vary,
    the rest class constants. A report of 100,000 tests counts these without building 100,000 dataclasses
    (104 bytes each instead of a 144-byte full row)."""

    __slots__ = ()
    __test__ = False  # not a pytest class, despite the name
    executions = 1
    failed_executions = 0
    problems: tuple[Problem, ...] = ()
    server_log: tuple = ()
    is_quarantined = False
    collisions: tuple = ()

    def result(self) -> TestResult:
        return TestResult(
            self.test_id, self.category, self.file, self.line, self.status, 1, 0, self.duration_s
        )


_new_row = tuple.__new__  # TestResultRow(…) without namedtuple's Python-level __new__
_TEST_ID = attrgetter("test_id")
_FILE, _LINE, _SECONDS = attrgetter("file"), attrgetter("line"), attrgetter("duration_s")


def group_tests(
    occurrences: Sequence[Occurrence],
    categorize: Callable[[Occurrence], str],
    classify: Callable[[str, str], Cause],
    pytest_sources: frozenset[str] = frozenset(),
) -> tuple[TestResult, ...]:
    """One TestResult per test id, attempts and repeats folded in; nothing is double-counted.

    `categorize` and `classify` are injected (they belong to the classify stage) so this stays pure.
    In a file from pytest, an empty testcase followed by another of the same test is a rerun attempt
    whose failure pytest did not record.
    """
    return tuple(
        t if isinstance(t, TestResult) else t.result()
        for t in group_tests_lazily(occurrences, categorize, classify, pytest_sources)
    )


def group_tests_lazily(
    occurrences: Sequence[Occurrence],
    categorize: Callable[[Occurrence], str],
    classify: Callable[[str, str], Cause],
    pytest_sources: frozenset[str] = frozenset(),
) -> list[TestResult | TestResultRow]:
    """`group_tests`, but a test seen once with a clean outcome is a `TestResultRow` (first-seen order)."""
    return group_tests_and_categories(occurrences, categorize, classify, pytest_sources)[0]


def group_tests_and_categories(
    occurrences: Sequence[Occurrence],
    categorize: Callable[[Occurrence], str],
    classify: Callable[[str, str], Cause],
    pytest_sources: frozenset[str] = frozenset(),
) -> tuple[list[TestResult | TestResultRow], list[str]]:
    """`group_tests_lazily`, and the category of each occurrence (its test's, in the order given): what
    the per-run durations add up by, without a lookup by test id for each of 100,000."""
    ids, occs = list(map(_TEST_ID, occurrences)), occurrences
    repeats: dict[str, list[Occurrence]] = {}
    if len(set(ids)) != len(ids):  # repeats, reruns: the first occurrence of each, its followers
        first: dict[str, Occurrence] = {}
        setdefault = first.setdefault
        for occ in occurrences:
            seen = setdefault(occ.test_id, occ)
            if seen is not occ:
                if occ.test_id in repeats:
                    repeats[occ.test_id].append(occ)
                else:
                    repeats[occ.test_id] = [seen, occ]
        ids, occs = list(first), list(first.values())
    # else every id is distinct (each test ran once, the common case): the occurrences are the tests' firsts
    # A categorizer that goes by file alone shares its cache: one call per file fills it, then it is read
    # in C; any other categorizer is called per test.
    files = list(map(_FILE, occs))
    by_file: dict[str | None, str] | None = getattr(categorize, "by_file", None)
    if by_file is None:
        found: list[str | None] = [None] * len(occs)
    else:
        found = list(map(by_file.get, files))
        if None in found:  # files not seen yet
            for occ in dict(zip(files, occs, strict=True)).values():
                categorize(occ)
            found = list(map(by_file.get, files))
    if None in found:  # no file, or a categorizer by rules
        cats = [cat or categorize(occ) for cat, occ in zip(found, occs, strict=True)]
    else:
        cats = cast(list[str], found)
    # Every test made as if it were one clean pass, in C (the commonest case); the others are then made
    # the long way and put in their places.
    tests: list[TestResult | TestResultRow] = list(
        map(
            _new_row,
            repeat(TestResultRow),
            zip(ids, cats, files, map(_LINE, occs), repeat(Status.PASSED), map(_SECONDS, occs)),
        )
    )
    others: Iterator[int] = compress(range(len(occs)), map(is_not, map(type, occs), repeat(PassRow)))
    if repeats:
        at = dict(zip(ids, range(len(ids)), strict=True))
        others = iter(sorted({*others, *(at[test_id] for test_id in repeats)}))
    for i in others:
        test_id, occ = ids[i], occs[i]
        # Quarantined tests take the long way: their xfailed failures become problems to show.
        status = _clean_status(occ.outcome) if test_id not in repeats and not occ.is_quarantined else None
        if status is not None:  # one clean execution: no attempt bookkeeping
            test = _new_row(TestResultRow, (test_id, cats[i], occ.file, occ.line, status, occ.duration_s))
        elif (
            test_id not in repeats
            and occ.outcome in _FAILED
            and occ.attempt is None
            and not occ.is_quarantined
        ):
            # One failed execution (most failing tests): what `_one_test` makes of it, without the walk
            # (its max(0.0, …) too, which reads a `time="-0"` as 0.0).
            test = TestResult(
                test_id, cats[i], occ.file, occ.line, _FAILED_IN[occ.phase], 1, 1,
                round(max(0.0, occ.duration_s), 6), (_problem(occ, classify),),
            )  # fmt: skip
        else:
            per_source: dict[str, list[Occurrence]] = {}
            for o in repeats.get(test_id, (occ,)):
                per_source.setdefault(o.source, []).append(o)
            test = _one_test(test_id, per_source, categorize, classify, pytest_sources)
        tests[i] = test  # its category is cats[i]: both are the first occurrence's
    if repeats:  # every occurrence takes its test's category
        return tests, list(map(dict(zip(ids, cats, strict=True)).__getitem__, map(_TEST_ID, occurrences)))
    return tests, cats  # one occurrence per test, in the same order


def _split_attempts(seq: list[Occurrence]) -> list[list[Occurrence]]:
    attempts: list[list[Occurrence]] = []
    for occ in seq:
        if attempts:
            last = attempts[-1][-1]
            same_attempt = occ.attempt is not None and occ.attempt == last.attempt
            teardown_after_failure = (
                occ.attempt is None
                and occ.phase is Phase.TEARDOWN
                and last.outcome in (Outcome.FAILED, Outcome.ERROR)
                and last.phase is not Phase.TEARDOWN
            )
            if same_attempt or teardown_after_failure:
                attempts[-1].append(occ)
                continue
        attempts.append([occ])
    return attempts


_FAILED = (Outcome.FAILED, Outcome.ERROR)
# A test whose one execution failed, by the phase it failed in (none given: the body, as `_one_test` says).
_FAILED_IN = {
    Phase.SETUP: Status.SETUP_ERROR,
    Phase.TEARDOWN: Status.TEARDOWN_ERROR,
    Phase.CALL: Status.FAILED,
    None: Status.FAILED,
}


def _clean_status(
    outcome: Outcome, passed=Outcome.PASSED, skipped=Outcome.SKIPPED, xfailed=Outcome.XFAILED
) -> Status | None:
    """The status of a test with this one outcome, None if it failed (identity tests: Enum hashing is slow)."""
    if outcome is passed:
        return Status.PASSED
    if outcome is skipped:
        return Status.SKIPPED
    return Status.XFAILED if outcome is xfailed else None


def _one_test(test_id, per_source, categorize, classify, pytest_sources) -> TestResult:
    first = next(iter(per_source.values()))[0]
    executions = failed = 0
    passed_any = xfailed_any = is_quarantined = False
    skipped_all = True
    final_phases: set[Phase] = set()
    problems: list[Problem] = []
    slowest = 0.0
    for source, seq in per_source.items():
        attempts = _split_attempts(seq)
        for i, attempt in enumerate(attempts):
            is_last = i == len(attempts) - 1
            executions += 1
            slowest = max(slowest, sum(o.duration_s for o in attempt))
            is_quarantined |= any(o.is_quarantined for o in attempt)
            bad = [o for o in attempt if o.outcome in _FAILED]
            hidden_rerun = (
                not bad and not is_last and (source in pytest_sources or attempt[0].attempt is not None)
            )
            if bad or hidden_rerun:
                failed += 1
                if is_last:
                    final_phases.update(o.phase for o in bad if o.phase)
                problems.extend(_problem(o, classify) for o in bad)
                skipped_all = False
                continue
            # A failure the quarantine turned into an xfail (the reader gave it back its phase): shown,
            # but it leaves the status xfailed and `failed_executions` alone, so no gate counts it.
            problems.extend(
                _problem(o, classify)
                for o in attempt
                if o.is_quarantined and o.outcome is Outcome.XFAILED and o.phase is not None
            )
            outcome = attempt[-1].outcome
            passed_any |= outcome is Outcome.PASSED
            xfailed_any |= outcome is Outcome.XFAILED
            skipped_all &= outcome in (Outcome.SKIPPED, Outcome.XFAILED)
    if failed and passed_any:
        status = Status.FLAKY
    elif failed:
        final_phases = final_phases or {Phase.CALL}
        status = (
            Status.SETUP_ERROR
            if Phase.SETUP in final_phases
            else Status.FAILED
            if Phase.CALL in final_phases
            else Status.TEARDOWN_ERROR
        )
    elif skipped_all:
        status = Status.XFAILED if xfailed_any else Status.SKIPPED
    else:
        status = Status.PASSED
    return TestResult(
        test_id, categorize(first), first.file, first.line, status, executions, failed, round(slowest, 6),
        tuple(problems), (), is_quarantined,
    )  # fmt: skip


def _problem(occ: Occurrence, classify: Callable[[str, str], Cause]) -> Problem:
    file, line = error_location(occ.text, occ.file, occ.line)
    return Problem(
        occ.phase or Phase.CALL, occ.outcome, occ.message, occ.text, classify(occ.message, occ.text), occ.source,
        occ.shard, occ.run, occ.attempt, file, line,
    )  # fmt: skip


def error_location(text: str, file: str | None, line: int | None) -> tuple[str | None, int | None]:
    """The deepest traceback entry in the repo (a relative `path.py:N:` line), else the test's own place."""
    return next(_repo_frames(text), (file, line))


def failing_line(text: str, file: str | None, line: int | None) -> tuple[str | None, int | None]:
    """Where an annotation points: the deepest traceback line inside the test's own file (`file.py:47`,
    1-based as pytest prints it, under the path the traceback uses), else the test's `def` line.

    A fixture error deep in conftest.py or a library points at the test, which is what a reviewer opens.
    """
    if file and text:
        for path, number in _repo_frames(text):
            if path == file or path.endswith("/" + file):
                return path, number
    return file, line


def _repo_frames(text: str) -> Iterator[tuple[str, int]]:
    """`path.py:N` of each traceback line in the repo (a relative path, not site-packages), deepest first.

    Tracebacks run to thousands of lines: they are split in C and only lines holding `.py:` meet the
    regex, from the end.
    """
    for text_line in reversed(text.split("\n")):
        if ".py:" in text_line and text_line[:1] != "/" and "site-packages" not in text_line:
            match = _FRAME_RE.match(text_line)
            if match:
                yield match.group(1), int(match.group(2))
