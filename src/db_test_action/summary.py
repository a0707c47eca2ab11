"""Parsed files + config → the one `Report` (counts, causes, budgets, verdict, gates). Pure.

This is the assembly stage between budgets and render: everything the Markdown, JSON, console and
annotations show is decided here, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from db_test_action.budgets import (
    category_durations,
    check_budgets,
    compute_timing,
    find_regressions,
    slowest_tests,
    with_category_budgets,
)
from db_test_action.classify import category_for, classify_failure, group_causes
from db_test_action.config import ReportConfig
from db_test_action.junit import ParsedFile, group_tests
from db_test_action.model import (
    BudgetStatus,
    Counts,
    Occurrence,
    ParseProblem,
    Report,
    ResultFile,
    Status,
    TestResult,
    Verdict,
)

_COLUMN = {
    Status.PASSED: "passed",
    Status.FAILED: "failed",
    Status.SETUP_ERROR: "setup_errors",
    Status.TEARDOWN_ERROR: "teardown_errors",
    Status.FLAKY: "flaky",
    Status.SKIPPED: "skipped",
    Status.XFAILED: "xfailed",
}


def build_report(
    parsed: Sequence[ParsedFile],
    config: ReportConfig,
    *,
    base: Report | None = None,
    manifest: Mapping[str, Any] | None = None,
    manifest_where: str = "manifest.json",
    extra_problems: Sequence[ParseProblem] = (),
) -> Report:
    """Group, classify, count and check; `manifest`/`config.expect_files` turn missing shards into problems."""
    occurrences = [o for p in parsed for o in p.occurrences]
    files = [p.info for p in parsed]
    problems = [p.problem for p in parsed if p.problem] + list(extra_problems)
    category_cache: dict[str, str] = {}

    def categorize(occ: Occurrence) -> str:
        if occ.test_id not in category_cache:
            category_cache[occ.test_id] = category_for(occ, config.categories)
        return category_cache[occ.test_id]

    classify = partial(classify_failure, extra_rules=config.classes)
    pytest_sources = frozenset(f.path for f in files if f.is_pytest)
    tests = group_tests(occurrences, categorize, classify, pytest_sources)
    category_of = {t.test_id: t.category for t in tests}
    if config.expect_files:
        problems += check_expected_files(config.expect_files, files)
    if manifest is not None:
        problems += check_manifest(manifest, manifest_where, files, set(category_of))
    durations = category_durations(occurrences, category_of)
    categories = with_category_budgets(count_by_category(tests, durations), config.budgets)
    totals = _count(tests, "all", round(sum(durations.values()), 3))
    timing = compute_timing(files, occurrences, tests)
    budgets = check_budgets(config.budgets, timing, categories)
    regressions = ()
    if base is not None:
        b = config.budgets
        regressions = find_regressions(timing, categories, base, b.regression_ratio, b.regression_min_s)
    problem_tests = tuple(sorted((t for t in tests if t.status.is_problem), key=_problem_order))
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
        slowest=slowest_tests(tests),
        details_per_cause=config.details_per_cause,
    )
    return decide(report)


def _problem_order(test: TestResult) -> tuple[int, str]:
    rank = {Status.SETUP_ERROR: 0, Status.TEARDOWN_ERROR: 1, Status.FAILED: 2, Status.FLAKY: 3}
    return rank.get(test.status, 9), test.test_id


def count_by_category(tests: Sequence[TestResult], durations: Mapping[str, float]) -> tuple[Counts, ...]:
    by_cat: dict[str, list[TestResult]] = {}
    for test in tests:
        by_cat.setdefault(test.category, []).append(test)
    return tuple(_count(by_cat[name], name, durations.get(name, 0.0)) for name in sorted(by_cat))


def _count(tests: Sequence[TestResult], name: str, duration_s: float) -> Counts:
    columns = dict.fromkeys(_COLUMN.values(), 0)
    for test in tests:
        columns[_COLUMN[test.status]] += 1
    return Counts(name=name, tests=len(tests), duration_s=duration_s, **columns)


def decide(report: Report) -> Report:
    """Verdict (worst thing seen) and which --fail-on gates tripped; re-run after any `replace`."""
    from dataclasses import replace

    t = report.totals
    over = any(b.status is BudgetStatus.OVER for b in report.budgets) or bool(report.regressions)
    broken = t.failed + t.setup_errors + t.teardown_errors
    if t.tests == 0 and not report.problems:
        verdict = Verdict.NO_TESTS
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
    if t.tests == 0:
        gates.append("no-tests")
    tripped = {
        "errors": t.setup_errors + t.teardown_errors > 0,
        "failures": t.failed > 0,
        "budgets": over,
        "flaky": t.flaky > 0,
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


def check_manifest(
    manifest: Mapping[str, Any], where: str, files: Sequence[ResultFile], test_ids: set[str]
) -> tuple[ParseProblem, ...]:
    """Every shard×run file of the runner's manifest is present, and every planned test reported."""
    shards, repeat = int(manifest["shards"]), int(manifest.get("repeat", 1))
    present = {
        (f.shard, f.run if f.run is not None else 1) for f in files if f.testcases and f.shard is not None
    }
    problems = []
    for shard in range(1, shards + 1):
        for run in range(1, repeat + 1):
            if (shard, run) not in present:
                problems.append(
                    ParseProblem(
                        f"shard-{shard}-run-{run}.xml",
                        f"missing: shard {shard} run {run} of {shards}×{repeat} wrote no results; re-run shard {shard}",
                    )
                )
    planned = manifest.get("tests", {})
    lost = [t for t in planned if t not in test_ids]
    if lost:
        more = f" and {len(lost) - 3} more" if len(lost) > 3 else ""
        problems.append(
            ParseProblem(
                where,
                f"{len(lost)} of {len(planned)} planned tests never reported ({', '.join(lost[:3])}{more}); "
                "a shard crashed or collected differently",
            )
        )
    return tuple(problems)


def validate_manifest(data: object, where: str) -> Mapping[str, Any]:
    from db_test_action.errors import DbTestActionError

    if (
        not isinstance(data, dict)
        or data.get("version") != 1
        or not isinstance(data.get("shards"), int)
        or data["shards"] < 1
        or not isinstance(data.get("tests", {}), dict)
    ):
        raise DbTestActionError(
            f'{where}: not a runner manifest (want {{"version": 1, "shards": N, "repeat": K, "tests": {{…}}}}); '
            "pass the manifest.json from the results dir"
        )
    return data
