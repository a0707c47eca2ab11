"""Time measures and budgets: suite wall time, per-category totals, average and slowest test; regressions.

Pure: callers pass the parsed files, occurrences and tests. A "run" is one full pass of the suite
(`--repeat` makes several); within a run, shards execute in parallel, so:
- suite wall time = the slowest single shard/run file (what the developer waits for), and
- suite total = the sum over all files (machine time);
- a category's time = the sum of its tests' durations within one run, taking the slowest run.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from functools import reduce
from itertools import groupby
from operator import add, attrgetter, itemgetter

from db_test_action.config.report import Budgets
from db_test_action.model import (
    BudgetCheck,
    BudgetStatus,
    Counts,
    Occurrence,
    Regression,
    Report,
    ResultFile,
    SlowTest,
    TestResult,
    Timing,
)

_DURATION, _EXECUTIONS, _RUN = attrgetter("duration_s"), attrgetter("executions"), attrgetter("run")
_FIRST, _SECOND = itemgetter(0), itemgetter(1)


def file_label(info: ResultFile) -> str:
    if info.shard is not None:
        return f"shard {info.shard}" + (f" run {info.run}" if info.run is not None else "")
    return info.path


def compute_timing(
    files: Sequence[ResultFile],
    occurrences: Sequence[Occurrence],
    tests: Sequence[TestResult],
    ranked: Sequence[TestResult] | None = None,
) -> Timing:
    """Wall/total from the files; average over every execution; slowest single execution of a test
    (`ranked`: `rank_by_duration(tests)`, when the caller has it, spares another pass over them)."""
    slowest_file = max(files, key=lambda f: f.wall_s, default=None)
    executions = sum(map(_EXECUTIONS, tests))  # map + attrgetter: a C loop over 100,000 tests
    total_test_s = sum(map(_DURATION, occurrences))
    if ranked is None:
        ranked = rank_by_duration(tests, 1)
    slowest = ranked[0] if ranked else None
    return Timing(
        wall_s=round(slowest_file.wall_s, 3) if slowest_file else 0.0,
        wall_source=file_label(slowest_file) if slowest_file else "",
        total_s=round(sum(f.wall_s for f in files), 3),
        average_test_s=round(total_test_s / executions, 4) if executions else 0.0,
        slowest_test=slowest.test_id if slowest else "",
        slowest_test_s=round(slowest.duration_s, 3) if slowest else 0.0,
    )


def category_durations(occurrences: Sequence[Occurrence], categories: Sequence[str]) -> dict[str, float]:
    """Per category: the sum of test durations within one run, for the slowest run (`categories`: each
    occurrence's). Consecutive occurrences of one category and run (a module's tests) are added in C
    (`reduce`), in the order given, so each sum is the same float a loop would make."""
    per_run: dict[tuple[str, int | None], float] = {}
    keyed = zip(
        zip(categories, map(_RUN, occurrences), strict=True), map(_DURATION, occurrences), strict=True
    )
    for key, group in groupby(keyed, key=_FIRST):
        per_run[key] = reduce(add, map(_SECOND, group), per_run.get(key, 0.0))
    result: dict[str, float] = {}
    for (category, _run), seconds in per_run.items():
        result[category] = max(result.get(category, 0.0), seconds)
    return {k: round(v, 3) for k, v in result.items()}


def rank_by_duration(tests: Sequence[TestResult], limit: int = 10) -> list[TestResult]:
    """The `limit` slowest tests, slowest first, ties in the given order (a stable sort's top, no copy)."""
    return heapq.nlargest(limit, tests, key=_DURATION)


def slowest_tests(tests: Sequence[TestResult], limit: int = 10) -> tuple[SlowTest, ...]:
    ranked = rank_by_duration(tests, limit)
    return tuple(SlowTest(t.test_id, t.category, round(t.duration_s, 3)) for t in ranked if t.duration_s > 0)


def budget_status(actual_s: float, limit_s: float, warn_at: float = 0.8) -> BudgetStatus:
    if actual_s > limit_s:
        return BudgetStatus.OVER
    if actual_s > limit_s * warn_at:
        return BudgetStatus.WARNING
    return BudgetStatus.OK


def check_budgets(budgets: Budgets, timing: Timing, categories: Sequence[Counts]) -> tuple[BudgetCheck, ...]:
    """One BudgetCheck per configured budget, in the order suite, total, average, slowest, categories."""
    checks = []
    measures = (
        ("suite wall time", "suite", budgets.suite_s, timing.wall_s, timing.wall_source),
        ("suite total (all shards and runs)", "suite-total", budgets.suite_total_s, timing.total_s, ""),
        ("average test", "average-test", budgets.average_test_s, timing.average_test_s, ""),
        ("slowest test", "slowest-test", budgets.slowest_test_s, timing.slowest_test_s, timing.slowest_test),
    )
    for name, key, limit, actual, detail in measures:
        if limit is not None:
            checks.append(
                BudgetCheck(name, key, actual, limit, budget_status(actual, limit, budgets.warn_at), detail)
            )
    by_name = {c.name: c for c in categories}
    for name, limit in budgets.categories:
        counts = by_name.get(name)
        actual = counts.duration_s if counts else 0.0
        detail = f"{counts.tests} tests" if counts else "no tests in this category"
        checks.append(
            BudgetCheck(
                f"category {name}", f"categories.{name}", actual, limit,
                budget_status(actual, limit, budgets.warn_at), detail,
            )
        )  # fmt: skip
    return tuple(checks)


def with_category_budgets(categories: Sequence[Counts], budgets: Budgets) -> tuple[Counts, ...]:
    from dataclasses import replace

    out = []
    for counts in categories:
        limit = budgets.for_category(counts.name)
        if limit is None:
            out.append(counts)
        else:
            status = budget_status(counts.duration_s, limit, budgets.warn_at)
            out.append(replace(counts, budget_s=limit, budget_status=status))
    return tuple(out)


def find_regressions(
    timing: Timing, categories: Sequence[Counts], base: Report, ratio: float = 0.2, min_s: float = 1.0
) -> tuple[Regression, ...]:
    """Measures more than `ratio` slower than the base report and by more than `min_s` seconds.

    Both conditions: 0.1 s → 0.3 s is +200 % but noise; 100 s → 101.5 s is +1.5 s but only 1.5 %.
    """
    pairs = [
        ("suite wall time", base.timing.wall_s, timing.wall_s),
        ("suite total", base.timing.total_s, timing.total_s),
        ("average test", base.timing.average_test_s, timing.average_test_s),
    ]
    base_cats = {c.name: c.duration_s for c in base.categories}
    pairs += [
        (f"category {c.name}", base_cats[c.name], c.duration_s) for c in categories if c.name in base_cats
    ]
    return tuple(
        Regression(name, before, now)
        for name, before, now in pairs
        if now > before * (1 + ratio) and now - before > min_s
    )
