"""Parsed files + config → the one `Report` (counts, causes, budgets, verdict, gates). Pure.

This is the assembly stage between budgets and render: everything the Markdown, JSON, console and
annotations show is decided here, so they cannot disagree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from itertools import chain, compress, repeat
from operator import is_not
from typing import TYPE_CHECKING, Any

from db_test_action.config.report import ReportConfig
from db_test_action.errors import DbTestActionError
from db_test_action.junit.attempts import TestResultRow, group_tests_and_categories
from db_test_action.junit.parse import ParsedFile
from db_test_action.model import (
    BudgetStatus,
    CategoryRule,
    Hang,
    Occurrence,
    Outcome,
    ParseProblem,
    Report,
    ResultFile,
    ServerLogSummary,
    Status,
    TestResult,
    Verdict,
)
from db_test_action.report.budgets import (
    category_durations,
    check_budgets,
    compute_timing,
    find_regressions,
    rank_by_duration,
    slowest_tests,
    with_category_budgets,
)
from db_test_action.report.classify import category_for, classify_failure, default_category, group_causes
from db_test_action.report.counts import count_by_category, quarantined_tests, sum_counts

if TYPE_CHECKING:
    from db_test_action.report.evidence import ServerEvent, TestWindow

# The server-evidence stages (evidence, collisions, doctor) are imported where they are used: a report
# without a server log — most JUnit from elsewhere — does not pay for loading them.

_PROBLEM = frozenset(s for s in Status if s.is_problem)


def build_report(
    parsed: Sequence[ParsedFile],
    config: ReportConfig,
    *,
    base: Report | None = None,
    manifest: Mapping[str, Any] | None = None,
    manifest_where: str = "manifest.json",
    extra_problems: Sequence[ParseProblem] = (),
    server_logs: Sequence[tuple[str, Sequence[ServerEvent]]] = (),
    server_note: str = "",
    server_problems: Sequence[ParseProblem] = (),
    tests_out: list[TestResult] | None = None,
    hangs: Sequence[Hang] = (),
) -> Report:
    """Group, classify, count and check; `manifest`/`config.expect_files` turn missing shards into problems.

    `server_logs` (file name → its records) become each failing test's server evidence; without them a
    `server_note` says why there is none (empty: not a run of ours, so the report says nothing about it).
    `tests_out`, when given, receives every grouped test (clean ones as `TestResultRow`s), e.g. for the
    merged JUnit file; otherwise they are dropped once counted.
    """
    occurrences = list(chain.from_iterable(p.rows for p in parsed))  # rows: Occurrence's fields, cheaper
    files = [p.info for p in parsed]
    problems = [p.problem for p in parsed if p.problem] + list(extra_problems)
    classify = partial(classify_failure, extra_rules=config.classes)
    pytest_sources = frozenset(f.path for f in files if f.is_pytest)
    categorize = _categorizer(config.categories)
    # Clean single executions come back as TestResultRows (same fields): only counted, never shown.
    tests, occurrence_categories = group_tests_and_categories(
        occurrences, categorize, classify, pytest_sources
    )
    if tests_out is not None:
        tests_out.extend(tests)  # type: ignore[arg-type]  # rows have the fields a reader uses
    if config.expect_files:
        problems += check_expected_files(config.expect_files, files)
    if manifest is not None:
        problems += check_manifest(manifest, manifest_where, files, {t.test_id for t in tests})
    durations = category_durations(occurrences, occurrence_categories)
    by_category = count_by_category(tests, durations)
    categories = with_category_budgets(by_category, config.budgets)
    totals = sum_counts(by_category, "all", round(sum(durations.values()), 3))
    ranked = rank_by_duration(tests)  # one pass for the slowest test and the ten slowest
    timing = compute_timing(files, occurrences, tests, ranked)
    budgets = check_budgets(config.budgets, timing, categories)
    regressions = ()
    if base is not None:
        b = config.budgets
        regressions = find_regressions(timing, categories, base, b.regression_ratio, b.regression_min_s)
    # Every problem and every quarantined test is a full TestResult: the clean rows (most) need no look.
    full = list(compress(tests, map(is_not, map(type, tests), repeat(TestResultRow))))  # a C loop
    problem_tests = tuple(sorted((t for t in full if t.status in _PROBLEM), key=_problem_order))
    server = None
    doctor = None
    if server_logs and any(getattr(row, "fixtures", None) for row in occurrences):
        from db_test_action.report.doctor import diagnose

        capacity = (manifest or {}).get("max_connections"), (manifest or {}).get("workers")
        doctor = diagnose(occurrences, [e for _name, events in server_logs for e in events], *capacity)
    if server_logs:
        problem_tests, server = attach_server_evidence(occurrences, problem_tests, server_logs)
        server = replace(server, problems=tuple(server_problems))
    elif server_note or server_problems:
        server = ServerLogSummary(note=server_note, problems=tuple(server_problems))
    report = Report(
        title=config.title,
        verdict=Verdict.PASSED,
        totals=totals,
        categories=categories,
        causes=group_causes(problem_tests),
        tests=problem_tests,
        timing=timing,
        budgets=budgets,
        regressions=regressions,
        problems=tuple(problems),
        files=tuple(f.path for f in files),
        fail_on=config.fail_on,
        gate_failures=(),
        slowest=slowest_tests(ranked),
        details_per_cause=config.details_per_cause,
        server=server,
        quarantined=quarantined_tests(full),
        is_empty_planned=manifest is not None and not _planned(manifest),
        hangs=tuple(hangs),
        doctor=doctor,
    )
    return decide(with_base(report, base))


_FAILING = frozenset({Status.FAILED, Status.SETUP_ERROR, Status.TEARDOWN_ERROR})


def with_base(report: Report, base: Report | None) -> Report:
    """What is new against the base branch's report: failing tests and budget breaches it did not have.

    A test the base report does not list as failing counts as new (it passed there, or did not exist);
    without a base, everything failing is new, so `--fail-on regressions` never passes by missing input.
    """
    failing = [t.test_id for t in report.tests if t.status in _FAILING]
    over = [b.key or b.name for b in report.budgets if b.status is BudgetStatus.OVER]
    if base is None:
        return replace(report, new_failures=tuple(failing), new_breaches=tuple(over), has_base=False)
    was_failing = {t.test_id for t in base.tests if t.status in _FAILING}
    was_over = {b.key or b.name for b in base.budgets if b.status is BudgetStatus.OVER}
    return replace(
        report,
        new_failures=tuple(t for t in failing if t not in was_failing),
        new_breaches=tuple(b for b in over if b not in was_over),
        has_base=True,
    )


def _planned(manifest: Mapping[str, Any]) -> dict[str, int]:
    only = manifest.get("only_shard")
    return {t: s for t, s in manifest.get("tests", {}).items() if not only or s == only}


# --- server-side evidence ------------------------------------------------------------------------------

SERVER_RECORDS_PER_TEST = 6
SERVER_EXAMPLES = 3


def attach_server_evidence(
    occurrences: Sequence[Occurrence],
    problem_tests: Sequence[TestResult],
    server_logs: Sequence[tuple[str, Sequence[ServerEvent]]],
) -> tuple[tuple[TestResult, ...], ServerLogSummary]:
    """Tie server records to the failing tests; count server errors no test's window holds.

    Every attempt with a recorded window takes part (a passing test's window explains away the errors it
    may have expected); only failing tests show their records. Matching rules: evidence.attribute_events.
    """
    from db_test_action.report.collisions import Evidence, created_relations, find_collisions, refine_causes
    from db_test_action.report.evidence import attribute_events, foreign_databases, to_record

    windows = test_windows(occurrences)
    source_of: dict[int, str] = {}
    events: list[ServerEvent] = []
    for name, file_events in server_logs:
        for event in file_events:
            source_of[id(event)] = name
            events.append(event)
    result = attribute_events(events, windows)
    by_test = dict(result.evidence)
    shown, attributed = [], 0
    index = Evidence(events, windows) if any(by_test.get(t.test_id) for t in problem_tests) else None
    created = created_relations(events) if index is not None else {}
    own_windows: dict[str, list[TestWindow]] = {}
    for window in windows:
        own_windows.setdefault(window.test_id, []).append(window)
    for test in problem_tests:
        found = by_test.get(test.test_id, ())
        if index is not None:
            collisions = find_collisions(test.test_id, found, own_windows.get(test.test_id, ()), index)
            test = refine_causes(test, collisions, created)
        if not found:
            shown.append(test)
            continue
        if len(found) > SERVER_RECORDS_PER_TEST:  # errors before lock waits, then back in time order
            found = sorted(sorted(found, key=lambda e: not e.is_error)[:SERVER_RECORDS_PER_TEST],
                           key=lambda e: e.timestamp)  # fmt: skip
        attributed += len(found)
        records = tuple(to_record(e, source_of.get(id(e), "")) for e in found)
        shown.append(replace(test, server_log=records))
    examples, seen = [], set()
    for event in result.in_no_window:
        key = (event.sqlstate, event.message)
        if key not in seen and len(examples) < SERVER_EXAMPLES:
            seen.add(key)
            examples.append(to_record(event, source_of.get(id(event), "")))
    summary = ServerLogSummary(
        files=tuple(name for name, _ in server_logs),
        records=len(events),
        errors=sum(1 for e in events if e.is_error and e.backend_type in (None, "client backend")),
        attributed=attributed,
        ambiguous=len(result.unattributed) - len(result.in_no_window),
        unattributed=len(result.in_no_window),
        examples=tuple(examples),
        foreign_databases=foreign_databases(events, windows),
    )
    return tuple(shown), summary


def test_windows(occurrences: Sequence[Occurrence]) -> list[TestWindow]:
    """One window per attempt the plugin timed; its failure messages are the tie-breaker between workers."""
    from db_test_action.report.evidence import TestWindow

    windows: dict[tuple[str, float], tuple[Occurrence, list[str]]] = {}
    for occ in occurrences:
        if occ.started_at is None or occ.finished_at is None:
            continue
        key = (occ.test_id, occ.started_at)
        entry = windows.get(key)
        if entry is None:
            entry = windows[key] = (occ, [])
        messages = entry[1]
        if occ.outcome is Outcome.FAILED or occ.outcome is Outcome.ERROR:
            messages += [m for m in (occ.message, occ.attempt_failure) if m and m not in messages]
        elif occ.attempt_failure and occ.attempt_failure not in messages:
            messages.append(occ.attempt_failure)
    return [
        TestWindow(occ.test_id, occ.started_at, occ.finished_at, occ.database, occ.worker, tuple(msgs))  # type: ignore[arg-type]
        for occ, msgs in windows.values()
    ]


def _problem_order(test: TestResult) -> tuple[int, str]:
    rank = {Status.SETUP_ERROR: 0, Status.TEARDOWN_ERROR: 1, Status.FAILED: 2, Status.FLAKY: 3}
    return rank.get(test.status, 9), test.test_id


def _categorizer(rules: Sequence[CategoryRule]) -> Callable[[Occurrence], str]:
    """`category_for` with the configured rules; without rules a test file's category is computed once."""
    if rules:
        return partial(category_for, rules=rules)
    return _ByFile()


class _ByFile:
    """The default categorizer: by the test's file, each file's category computed once. Grouping reads
    `by_file` directly (a dict lookup instead of a call per test of 100,000)."""

    def __init__(self) -> None:
        self.by_file: dict[str | None, str] = {}

    def __call__(self, occ: Occurrence) -> str:
        if not occ.file:
            return default_category(occ.file, occ.test_id)
        category = self.by_file.get(occ.file)
        if category is None:
            category = self.by_file[occ.file] = default_category(occ.file, occ.test_id)
        return category


def decide(report: Report) -> Report:
    """Verdict (worst thing seen) and which --fail-on gates tripped; re-run after any `replace`."""
    t = report.totals
    over = any(b.status is BudgetStatus.OVER for b in report.budgets) or bool(report.regressions)
    broken = t.failed + t.hard_fixture_errors
    if t.tests == 0 and not report.problems:
        verdict = Verdict.PASSED if report.is_empty_planned else Verdict.NO_TESTS
    elif broken:
        verdict = Verdict.FAILED
    elif report.problems:
        verdict = Verdict.INCOMPLETE
    elif over:
        verdict = Verdict.OVER_BUDGET
    elif t.flaky:
        verdict = Verdict.FLAKY
    else:
        verdict = Verdict.PASSED
    gates = []
    if report.problems:
        gates.append("incomplete")
    if t.tests == 0 and not report.is_empty_planned:
        gates.append("no-tests")
    tripped = {
        "errors": t.hard_fixture_errors > 0,
        "failures": t.failed > 0,
        "budgets": over,
        "flaky": t.flaky > 0,
        "regressions": bool(report.new_failures or report.new_breaches),
    }
    gates += [gate for gate in report.fail_on if tripped.get(gate)]
    return replace(report, verdict=verdict, gate_failures=tuple(gates))


# --- completeness: --expect-files and the runner's manifest ------------------------------------------


def check_expected_files(expected: int, files: Sequence[ResultFile]) -> tuple[ParseProblem, ...]:
    readable = [f for f in files if f.testcases]
    if len(readable) >= expected:
        return ()
    return (
        ParseProblem(
            "--expect-files",
            f"expected {expected} result files with tests, found {len(readable)}; a shard did not report "
            "(check its job log)",
        ),
    )


MAX_MISSING_NAMED = 20


def check_manifest(
    manifest: Mapping[str, Any], where: str, files: Sequence[ResultFile], test_ids: set[str]
) -> tuple[ParseProblem, ...]:
    """Every shard×run file of the runner's manifest is present, and every planned test reported.

    `only_shard` (set by `report --shard I` in a shard job) narrows the check to that shard's files and tests.
    """
    shards, repeat = int(manifest["shards"]), int(manifest.get("repeat", 1))
    only = manifest.get("only_shard")
    # A file the runner wrote counts even without testcases: a shard with no tests (fewer tests than
    # shards) writes an empty one on purpose. A crashed run writes one with an error testcase.
    present = {(f.shard, f.run if f.run is not None else 1) for f in files if f.shard is not None}
    runs_of: dict[int, set[int]] = {}
    for shard, run in present:
        runs_of.setdefault(shard, set()).add(run)
    # Time and memory linear in the shards and the files present, never in shards × runs (a manifest
    # may claim 10,000 × 10,000): the missing pairs are counted, and only the first few are named.
    problems = []
    missing = 0
    for shard in [only] if only else range(1, shards + 1):
        runs = runs_of.get(shard, set())
        # --until-failure stops a shard's repeats early: its runs 1..last are due, not all K.
        due = min(max(runs, default=1), repeat) if manifest.get("until_failure") else repeat
        absent = due - sum(1 for r in runs if 1 <= r <= due)
        missing += absent
        run = 1
        while absent and len(problems) < MAX_MISSING_NAMED:
            if run not in runs:
                problems.append(
                    ParseProblem(
                        f"shard-{shard}-run-{run}.xml",
                        f"missing: shard {shard} run {run} of {shards}×{repeat} wrote no results; re-run shard {shard}",
                    )
                )
                absent -= 1
            run += 1
    if missing > len(problems):
        problems.append(
            ParseProblem(
                where,
                f"and {missing - len(problems)} more shard×run result files missing "
                f"({missing} of {(1 if only else shards) * repeat}); "
                "re-run the shards that did not report",
            )
        )
    planned = _planned(manifest)
    lost: dict[int, list[str]] = {}
    for test, shard in planned.items():
        if test not in test_ids:
            lost.setdefault(shard, []).append(test)
    per_shard = Counter(planned.values())  # once: linear in the tests, whatever the number of shards
    for shard in sorted(lost):
        tests = lost[shard]
        of = per_shard[shard]
        more = f" and {len(tests) - 3} more" if len(tests) > 3 else ""
        problems.append(
            ParseProblem(
                where,
                f"shard {shard}: {len(tests)} of {of} planned tests never reported ({', '.join(tests[:3])}{more}); "
                "the shard was stopped, crashed or collected differently",
            )
        )
    return tuple(problems)


def validate_manifest(data: object, where: str) -> Mapping[str, Any]:
    if (
        not isinstance(data, dict)
        or data.get("version") != 1
        or not isinstance(data.get("shards"), int)
        or data["shards"] < 1
        or not isinstance(data.get("tests", {}), dict)
        or not isinstance(data.get("repeat", 1), int)
        or not 1 <= data.get("repeat", 1) <= 10_000
        or data["shards"] > 10_000
        or not all(type(v) is int and 1 <= v <= data["shards"] for v in data.get("tests", {}).values())
        or not all(_count_or_none(data.get(k)) for k in ("max_connections", "workers"))
    ):
        raise DbTestActionError(
            f'{where}: not a runner manifest (want {{"version": 1, "shards": N, "repeat": K, "tests": {{…}}}}); '
            "pass the manifest.json from the results dir"
        )
    return data


def _count_or_none(value: object) -> bool:
    """An optional positive count of the manifest (`max_connections`, `workers`): absent, or 1..1,000,000."""
    return value is None or (type(value) is int and 1 <= value <= 1_000_000)
