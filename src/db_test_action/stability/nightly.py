"""Tonight's JUnit → per-test counts per session, suite runs, and the compact `Night` the history keeps. Pure.

A *session* is one pytest process (one shard of one run, `shard-I-run-K.xml`); a *suite run* is run K
over all shards. Per test and session the question is: did it pass at the first attempt? A test that
needs a rerun is exactly what a nightly stability job hunts, so a rerun-saved session counts as bad.

Why the Night layout (present ids + one shared `clean` count + the few `odd` tests): a night of 5,000
tests is 4,990 identical "ran R times, passed R times" and a handful that differ, so the history stays
small on disk and in memory, and aggregation over 365 nights runs at C speed (`Counter.update`) for the
clean majority; only tests that ever misbehaved are walked night by night.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from operator import attrgetter, itemgetter
from pathlib import PurePosixPath

from db_test_action.junit.parse import ParsedFile, group_tests_lazily
from db_test_action.model import (
    CategoryRule,
    Cause,
    CauseRule,
    Occurrence,
    Outcome,
    ParseProblem,
    Phase,
    Status,
    TestResult,
)
from db_test_action.report.classify import category_for, classify_failure
from db_test_action.stability.conflicts import Conflict


@dataclass(frozen=True, slots=True)
class TestCounts:
    """One test over some sessions. `runs` counts sessions where it ran (skips excluded); `passes` those
    clean at the first attempt; `failures`/`fixture_errors` sessions with a failing body / setup-or-teardown
    error in any attempt; `reruns` extra attempts; `rerun_passes` sessions saved by a rerun."""

    __test__ = False

    runs: int = 0
    passes: int = 0
    failures: int = 0
    fixture_errors: int = 0
    reruns: int = 0
    rerun_passes: int = 0

    @property
    def bad(self) -> int:
        """Sessions not clean at the first attempt: the numerator of the flake rate."""
        return self.runs - self.passes

    @property
    def is_never_passed(self) -> bool:
        return self.runs > 0 and self.passes + self.rerun_passes == 0

    def as_tuple(self) -> tuple[int, int, int, int, int, int]:
        return (self.runs, self.passes, self.failures, self.fixture_errors, self.reruns, self.rerun_passes)


@dataclass(frozen=True, slots=True)
class Night:
    """What the history keeps of one night: suite runs (green or not), which tests ran, and their counts —
    `clean` for every present test not listed in `odd`."""

    label: str
    runs: tuple[bool, ...]
    present: tuple[str, ...]
    clean: TestCounts
    odd: tuple[tuple[str, TestCounts], ...] = ()
    causes: tuple[tuple[str, int], ...] = ()  # root-cause key → failing occurrences, this night
    commit: str = ""
    conflicts: tuple[Conflict, ...] = ()  # this night's colliding pairs (conflicts.py), most first

    def counts_of(self, test_id: str) -> TestCounts | None:
        """Slow path (tests, rendering); aggregation uses `present`/`odd` directly."""
        for tid, counts in self.odd:
            if tid == test_id:
                return counts
        return self.clean if test_id in self.present else None

    @property
    def is_clean(self) -> bool:
        return bool(self.runs) and all(self.runs)


def night_from_counts(
    label: str,
    runs: Sequence[bool],
    counts: Mapping[str, TestCounts],
    causes: Mapping[str, int] | None = None,
    commit: str = "",
) -> Night:
    """Compact form: the most common counts become `clean`; every other test is `odd`."""
    present = tuple(sorted(tid for tid, c in counts.items() if c.runs > 0))
    mode = Counter(counts[tid] for tid in present).most_common(1)
    clean = mode[0][0] if mode else TestCounts()
    odd = tuple((tid, counts[tid]) for tid in present if counts[tid] != clean)
    return Night(label, tuple(runs), present, clean, odd, tuple(sorted((causes or {}).items())), commit)


# --- tonight: parsed JUnit → per-test counts, suite runs ----------------------------------------------


@dataclass(frozen=True, slots=True)
class ObservedTest:
    test_id: str
    category: str
    counts: TestCounts
    causes: tuple[Cause, ...] = ()  # distinct root causes of tonight's failing attempts, most frequent first
    cause_occurrences: tuple[int, ...] = ()
    message: str = ""  # one failure message, for the table


@dataclass(frozen=True, slots=True)
class SuiteRun:
    """Run K over all shards. Green: every session present, readable, and every test clean at first try."""

    run: int
    sessions: int
    bad_tests: int
    is_complete: bool

    @property
    def is_green(self) -> bool:
        return self.is_complete and self.bad_tests == 0


@dataclass(frozen=True, slots=True)
class Observed:
    tests: tuple[ObservedTest, ...]
    runs: tuple[SuiteRun, ...]
    problems: tuple[ParseProblem, ...]


def observe(
    parsed: Sequence[ParsedFile],
    categories: Sequence[CategoryRule] = (),
    classes: Sequence[CauseRule] = (),
    expected_runs: int | None = None,
) -> Observed:
    """Group tonight's files into sessions (shard, run), fold reruns per session with the reporter's own
    `group_tests`, and count per test. A run is incomplete when a shard seen in other runs is missing from
    it, when one of its files is broken, or (with `expected_runs`) when it is absent altogether."""
    sessions: dict[tuple[int, str], list[Occurrence]] = {}
    pytest_sources = frozenset(p.info.path for p in parsed if p.info.is_pytest)
    broken_runs: set[int] = set()
    for index, (item, run) in enumerate(zip(parsed, suite_runs(parsed), strict=True)):
        shard = str(item.info.shard) if item.info.shard is not None else f"file-{index}"
        sessions.setdefault((run, shard), []).extend(item.rows)  # rows: Occurrence's fields, cheaper
        if item.problem:
            broken_runs.add(run)
    all_shards = {shard for _run, shard in sessions if not shard.startswith("file-")}
    classify = partial(classify_failure, extra_rules=tuple(classes))
    totals: dict[str, list[int]] = {}
    clean: Counter[str] = Counter()  # sessions where the test ran once and passed: (1, 1, 0, 0, 0, 0) each
    first: dict[str, Occurrence] = {}  # each test's first occurrence over the sessions: its category
    causes: dict[str, Counter[Cause]] = {}
    messages: dict[str, str] = {}
    bad_per_run: Counter[int] = Counter()
    passed = Outcome.PASSED
    for (run, _shard), occurrences in sorted(sessions.items()):
        # ~95 % of a night is one clean pass per test and session: counted at C speed; only the rest
        # (reruns, failures, skips, quarantine) goes through the reporter's grouping.
        ids = list(map(_test_id, occurrences))
        repeated = {tid for tid, n in Counter(ids).items() if n > 1}
        once = [(tid, o) for tid, o in zip(ids, occurrences, strict=True)
                if o.outcome is passed and not o.is_quarantined and tid not in repeated]  # fmt: skip
        clean.update(map(_first, once))
        session_first = dict(once)
        rest = [
            o for o in occurrences if o.outcome is not passed or o.is_quarantined or o.test_id in repeated
        ]
        for occ in rest:
            session_first.setdefault(occ.test_id, occ)
        session_first.update(first)  # an earlier session's occurrence wins
        first = session_first
        for result in group_tests_lazily(rest, _no_category, classify, pytest_sources):
            delta = _session_counts(result)
            if delta is None:
                continue
            row = totals.setdefault(result.test_id, [0] * 6)
            for i, value in enumerate(delta):
                row[i] += value
            if delta[1] == 0:
                bad_per_run[run] += 1
                for problem in result.problems:
                    bare = Cause(problem.cause.key, problem.cause.title, problem.cause.hint)
                    causes.setdefault(result.test_id, Counter())[bare] += 1
                    messages.setdefault(result.test_id, problem.message)
    for test_id, n in clean.items():
        row = totals.setdefault(test_id, [0] * 6)
        row[0] += n
        row[1] += n
    category_cache = {tid: category_for(first[tid], categories) for tid in totals}
    tests = []
    for test_id in sorted(totals):
        ranked = causes[test_id].most_common() if test_id in causes else ()
        tests.append(
            ObservedTest(
                test_id, category_cache.get(test_id, "other"), TestCounts(*totals[test_id]),
                tuple(c for c, _ in ranked), tuple(n for _, n in ranked), messages.get(test_id, ""),
            )
        )  # fmt: skip
    run_numbers = sorted({run for run, _ in sessions} | set(range(1, (expected_runs or 0) + 1)))
    runs = []
    for run in run_numbers:
        shards = {shard for r, shard in sessions if r == run}
        is_complete = run not in broken_runs and bool(shards) and all_shards <= shards
        runs.append(SuiteRun(run, len(shards), bad_per_run[run], is_complete))
    problems = tuple(p.problem for p in parsed if p.problem)
    return Observed(tuple(tests), tuple(runs), problems)


_DIR_RUN_RE = re.compile(r"(?:^|[-_.])run-(\d+)(?:[-_.]|$)")


def suite_runs(parsed: Sequence[ParsedFile]) -> list[int]:
    """The suite run of each file. Each job of a nightly matrix runs `--repeat K` and numbers its runs 1..K,
    so when files sit in directories named like `…-run-R-…` (one artifact per job), run k of job R is a
    run of its own: (R, k) pairs are numbered 1, 2, … in order. Otherwise the file's own run number."""
    keys = []
    for item in parsed:
        outer = 0
        for part in reversed(PurePosixPath(item.info.path.replace("\\", "/")).parts[:-1]):
            found = _DIR_RUN_RE.findall(part)
            if found:
                outer = int(found[-1])
                break
        keys.append((outer, item.info.run or 1))
    if all(outer == 0 for outer, _ in keys):
        return [run for _, run in keys]
    ordinal = {key: i for i, key in enumerate(sorted(set(keys)), start=1)}
    return [ordinal[key] for key in keys]


_test_id = attrgetter("test_id")
_first = itemgetter(0)


def _no_category(_occ: Occurrence) -> str:
    """Grouping's category is not used here: observe() takes each test's from its first occurrence."""
    return ""


def _session_counts(result: TestResult) -> tuple[int, int, int, int, int, int] | None:
    """One session of one test → (runs, passes, failures, fixture_errors, reruns, rerun_passes)."""
    if result.status in (Status.SKIPPED, Status.XFAILED):
        return None
    if result.status is Status.PASSED and result.failed_executions == 0:
        return (1, 1, 0, 0, 0, 0)
    phases = {p.phase for p in result.problems}
    failures = int(Phase.CALL in phases or not phases)
    fixture_errors = int(bool(phases & {Phase.SETUP, Phase.TEARDOWN}))
    rerun_passes = int(result.status is Status.FLAKY)
    return (1, 0, failures, fixture_errors, max(result.executions - 1, 0), rerun_passes)


def night_of(observed: Observed, label: str, commit: str = "") -> Night:
    causes: Counter[str] = Counter()
    for test in observed.tests:
        for cause, n in zip(test.causes, test.cause_occurrences, strict=True):
            causes[cause.key] += n
    counts = {t.test_id: t.counts for t in observed.tests}
    return night_from_counts(label, [r.is_green for r in observed.runs], counts, causes, commit)


@dataclass(frozen=True, slots=True)
class TrendPoint:
    label: str
    tests: int
    flaky_tests: int
    broken_tests: int
    runs: int
    green_runs: int
    test_runs: int
    bad_test_runs: int


def trend_points(nights: Sequence[Night]) -> tuple[TrendPoint, ...]:
    """One point per night from the compact form alone (no per-test expansion): cheap for 365 nights."""
    points = []
    for night in nights:
        odd_bad = [c for _tid, c in night.odd if c.bad]
        clean_n = len(night.present) - len(night.odd)
        clean_bad = night.clean.bad > 0
        broken = sum(1 for c in odd_bad if c.is_never_passed) + (
            clean_n if night.clean.is_never_passed else 0
        )
        flaky = len(odd_bad) + (clean_n if clean_bad else 0) - broken
        test_runs = night.clean.runs * clean_n + sum(c.runs for _tid, c in night.odd)
        bad_runs = night.clean.bad * clean_n + sum(c.bad for c in odd_bad)
        points.append(
            TrendPoint(
                night.label, len(night.present), flaky, broken, len(night.runs), sum(night.runs), test_runs, bad_runs
            )
        )  # fmt: skip
    return tuple(points)
