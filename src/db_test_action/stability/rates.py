"""Nightly stability: flake rates with Wilson intervals, statuses across nights, streaks, gates. Pure.

Tonight's per-test counts come from `nightly.observe`; earlier nights from the history, oldest first.
Rates and statuses look at a window of nights (default 14) so one unlucky night neither brands a test
flaky for a year nor hides a regression; streaks (consecutive green suite runs, clean nights) span the
whole history because "N green runs in a row" must not restart at midnight.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from db_test_action.model import Cause, ParseProblem
from db_test_action.stability.conflicts import Conflict
from db_test_action.stability.nightly import (
    Night,
    Observed,
    ObservedTest,
    SuiteRun,
    TestCounts,
    TrendPoint,
    trend_points,
)

Z_95 = 1.959964  # two-sided 95 % normal quantile for the Wilson interval
GATES = ("consecutive", "broken", "newly-flaky", "flaky")


class Stability(str, Enum):
    """Where one test stands. Broken: ran tonight and never passed. Newly flaky: bad runs tonight after only
    clean nights in the window. Recovered: bad earlier in the window, clean for the last `recover_after` nights
    (or fixed right after being broken)."""

    STABLE = "stable"
    FLAKY = "flaky"
    NEWLY_FLAKY = "newly-flaky"
    BROKEN = "broken"
    RECOVERED = "recovered"

    @property
    def is_flaky(self) -> bool:
        return self in (Stability.FLAKY, Stability.NEWLY_FLAKY)


class NightVerdict(str, Enum):
    GREEN = "green"
    FLAKY = "flaky"
    BROKEN = "broken"
    INCOMPLETE = "incomplete"
    NO_TESTS = "no-tests"


# --- statistics ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rate:
    """`bad` of `runs` with a 95 % Wilson score interval: honest for 0/20 (not "0 %, certain") and 1/3."""

    bad: int
    runs: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.bad / self.runs if self.runs else 0.0


def wilson(bad: int, runs: int, z: float = Z_95) -> Rate:
    if runs <= 0:
        return Rate(0, 0, 0.0, 1.0)
    p = bad / runs
    denominator = 1 + z * z / runs
    centre = p + z * z / (2 * runs)
    spread = z * math.sqrt(p * (1 - p) / runs + z * z / (4 * runs * runs))
    low = max(0.0, (centre - spread) / denominator)
    high = min(1.0, (centre + spread) / denominator)
    return Rate(bad, runs, 0.0 if bad == 0 else low, 1.0 if bad == runs else high)


def window_totals(
    nights: Sequence[Night],
) -> tuple[dict[str, TestCounts], Counter[str], dict[str, list[int]]]:
    """Per test over `nights`: summed counts, nights present, and (for tests that ever had a bad night) the
    list of night indexes that were bad. Clean tests are summed per distinct `clean` value via Counter."""
    presence: dict[TestCounts, Counter[str]] = {}
    nights_seen: Counter[str] = Counter()
    corrections: dict[str, list[int]] = {}
    bad_nights: dict[str, list[int]] = {}
    for index, night in enumerate(nights):
        presence.setdefault(night.clean, Counter()).update(night.present)
        nights_seen.update(night.present)
        if night.clean.bad:
            odd_ids = {tid for tid, _ in night.odd}
            for tid in night.present:
                if tid not in odd_ids:
                    bad_nights.setdefault(tid, []).append(index)
        clean = night.clean.as_tuple()
        for tid, counts in night.odd:
            row = corrections.setdefault(tid, [0] * 6)
            for i, (value, base) in enumerate(zip(counts.as_tuple(), clean, strict=True)):
                row[i] += value - base
            if counts.bad:
                bad_nights.setdefault(tid, []).append(index)
    totals: dict[str, list[int]] = {}
    for clean_counts, counter in presence.items():
        base = clean_counts.as_tuple()
        for tid, n in counter.items():
            row = totals.get(tid)
            if row is None:
                totals[tid] = [v * n for v in base]
            else:
                for i, v in enumerate(base):
                    row[i] += v * n
    for tid, delta in corrections.items():
        row = totals[tid]
        for i, v in enumerate(delta):
            row[i] += v
    for indexes in bad_nights.values():
        indexes.sort()
    return {tid: TestCounts(*row) for tid, row in totals.items()}, nights_seen, bad_nights


def classify_stability(
    tonight: TestCounts,
    previous: Sequence[TestCounts | None],
    recover_after: int = 3,
) -> Stability:
    """Status from tonight and the earlier nights of the window (oldest first; None = did not run)."""
    if tonight.bad:
        if tonight.is_never_passed:
            return Stability.BROKEN
        ran_before = [c for c in previous if c is not None and c.runs]
        if ran_before and not any(c.bad for c in ran_before):
            return Stability.NEWLY_FLAKY
        return Stability.FLAKY
    clean_streak = 1
    for counts in reversed(previous):
        if counts is None or not counts.runs:
            continue
        if counts.bad:
            if counts.is_never_passed or clean_streak >= recover_after:
                return Stability.RECOVERED  # broken then fixed is a fix, not luck
            return Stability.FLAKY
        clean_streak += 1
    return Stability.STABLE


def trailing_true(flags: Iterable[bool]) -> int:
    """Length of the run of True at the end: consecutive green runs, clean nights."""
    count = 0
    for flag in flags:
        count = count + 1 if flag else 0
    return count


def gate_failures(
    fail_on: Sequence[str], statuses: Iterable[Stability], streak: int, required: int | None
) -> tuple[str, ...]:
    seen = set(statuses)
    tripped = {
        "consecutive": required is not None and streak < required,
        "broken": Stability.BROKEN in seen,
        "newly-flaky": Stability.NEWLY_FLAKY in seen,
        "flaky": bool(seen & {Stability.FLAKY, Stability.NEWLY_FLAKY}),
    }
    return tuple(g for g in fail_on if tripped.get(g))


def parse_gates(value: str) -> tuple[str, ...]:
    """`broken,consecutive` → ("broken", "consecutive"); "none" → (); ValueError on an unknown gate."""
    gates = tuple(dict.fromkeys(g.strip().lower() for g in value.replace(" ", ",").split(",") if g.strip()))
    if gates == ("none",):
        return ()
    if any(g not in GATES for g in gates):
        raise ValueError(value)
    return gates


# --- the report ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StabilitySettings:
    """`window`: nights (tonight included) that flake rates and statuses look at."""

    window: int = 14
    recover_after: int = 3
    require_consecutive: int | None = None
    fail_on: tuple[str, ...] = ("consecutive",)
    title: str = "Nightly stability"


@dataclass(frozen=True, slots=True)
class TestStability:
    __test__ = False

    test_id: str
    category: str
    status: Stability
    tonight: TestCounts
    window: TestCounts
    rate: Rate  # over the window
    bad_nights: int  # nights in the window (tonight included) with a bad run
    nights: int  # nights in the window the test ran
    causes: tuple[str, ...] = ()  # tonight's root-cause keys
    message: str = ""


@dataclass(frozen=True, slots=True)
class GroupStability:
    """A category or a root-cause class: how many tests in each status, and the pooled window rate."""

    name: str
    tests: int
    flaky: int
    newly_flaky: int
    broken: int
    recovered: int
    rate: Rate
    title: str = ""
    hint: str = ""
    occurrences: int = 0
    categories: tuple[str, ...] = ()
    example_test: str = ""
    example_message: str = ""
    trend: tuple[int, ...] = ()  # occurrences per night, oldest first (causes only)


@dataclass(frozen=True, slots=True)
class StabilityReport:
    title: str
    night: str
    verdict: NightVerdict
    tests: tuple[TestStability, ...]  # every test that ran tonight, worst first
    categories: tuple[GroupStability, ...]
    causes: tuple[GroupStability, ...]
    runs: tuple[SuiteRun, ...]
    consecutive_green: int  # trailing green suite runs, across nights
    required_consecutive: int | None
    clean_nights: int  # trailing nights whose every run was green, tonight included
    window_nights: int  # nights the rates cover (≤ settings.window)
    trend: tuple[TrendPoint, ...]  # every night in the history, then tonight
    problems: tuple[ParseProblem, ...]
    fail_on: tuple[str, ...]
    gate_failures: tuple[str, ...]
    quarantine: tuple[str, ...]  # flaky and newly flaky node ids
    # Tonight's collision partners (from the server logs next to the results): pairs that collide most.
    conflicts: tuple[Conflict, ...] = ()
    conflicts_unknown: int = 0  # collisions whose partner the evidence did not name

    @property
    def is_green(self) -> bool:
        return not self.gate_failures

    def count(self, status: Stability) -> int:
        return sum(1 for t in self.tests if t.status is status)


_ORDER = {Stability.BROKEN: 0, Stability.NEWLY_FLAKY: 1, Stability.FLAKY: 2, Stability.RECOVERED: 3}


def build_stability(
    observed: Observed, tonight: Night, previous: Sequence[Night], settings: StabilitySettings
) -> StabilityReport:
    """Tonight (`observed`, and its compact `tonight`) against the earlier nights (oldest first)."""
    earlier = tuple(n for n in previous if n.label != tonight.label)
    window = earlier[-(settings.window - 1) :] if settings.window > 1 else ()
    totals, seen, bad_nights = window_totals(window)
    odd_maps = [dict(n.odd) for n in window]
    present_sets: list[frozenset[str]] = []
    tests = []
    for obs in observed.tests:
        before = totals.get(obs.test_id, TestCounts())
        if obs.test_id in bad_nights:  # only tests that misbehaved before need night-by-night detail
            if not present_sets:
                shared: dict[int, frozenset[str]] = {}  # nights with the same test set share one tuple
                for n in window:
                    if id(n.present) not in shared:
                        shared[id(n.present)] = frozenset(n.present)
                    present_sets.append(shared[id(n.present)])
            history = [
                odd_maps[i].get(obs.test_id, n.clean) if obs.test_id in present_sets[i] else None
                for i, n in enumerate(window)
            ]
        else:
            history = [before] if before.runs else []
        status = classify_stability(obs.counts, history, settings.recover_after)
        combined = TestCounts(*(a + b for a, b in zip(before.as_tuple(), obs.counts.as_tuple(), strict=True)))
        nights_bad = len(bad_nights.get(obs.test_id, ())) + int(obs.counts.bad > 0)
        nights = seen[obs.test_id] + 1
        tests.append(
            TestStability(
                obs.test_id, obs.category, status, obs.counts, combined, wilson(combined.bad, combined.runs),
                nights_bad, nights, tuple(c.key for c in obs.causes), obs.message,
            )
        )  # fmt: skip
    tests.sort(key=lambda t: (_ORDER.get(t.status, 9), -t.rate.value, t.test_id))
    all_runs = [flag for n in earlier for flag in n.runs] + [r.is_green for r in observed.runs]
    streak = trailing_true(all_runs)
    clean_nights = trailing_true([n.is_clean for n in earlier] + [tonight.is_clean])
    gates = list(
        gate_failures(settings.fail_on, (t.status for t in tests), streak, settings.require_consecutive)
    )
    if observed.problems or not all(r.is_complete for r in observed.runs):
        gates.insert(0, "incomplete")
    if not tests:
        gates.insert(0, "no-tests")
    return StabilityReport(
        title=settings.title,
        night=tonight.label,
        verdict=_verdict(observed, tests),
        tests=tuple(tests),
        categories=_by_category(tests),
        causes=_by_cause(observed, tests, (*earlier, tonight)),
        runs=observed.runs,
        consecutive_green=streak,
        required_consecutive=settings.require_consecutive,
        clean_nights=clean_nights,
        window_nights=len(window) + 1,
        trend=trend_points((*earlier, tonight)),
        problems=observed.problems,
        fail_on=settings.fail_on,
        gate_failures=tuple(dict.fromkeys(gates)),
        quarantine=tuple(sorted(t.test_id for t in tests if t.status.is_flaky)),
    )


def _verdict(observed: Observed, tests: Sequence[TestStability]) -> NightVerdict:
    if not tests:
        return NightVerdict.NO_TESTS
    if any(t.tonight.is_never_passed for t in tests):
        return NightVerdict.BROKEN
    if observed.problems or not all(r.is_complete for r in observed.runs):
        return NightVerdict.INCOMPLETE
    if any(t.tonight.bad for t in tests):
        return NightVerdict.FLAKY
    return NightVerdict.GREEN


def _group(name: str, tests: Sequence[TestStability], **extra: object) -> GroupStability:
    statuses = Counter(t.status for t in tests)
    bad = sum(t.window.bad for t in tests)
    runs = sum(t.window.runs for t in tests)
    return GroupStability(
        name, len(tests), statuses[Stability.FLAKY], statuses[Stability.NEWLY_FLAKY], statuses[Stability.BROKEN],
        statuses[Stability.RECOVERED], wilson(bad, runs), **extra,  # type: ignore[arg-type]
    )  # fmt: skip


def _by_category(tests: Sequence[TestStability]) -> tuple[GroupStability, ...]:
    by_name: dict[str, list[TestStability]] = {}
    for test in tests:
        by_name.setdefault(test.category, []).append(test)
    return tuple(_group(name, by_name[name]) for name in sorted(by_name))


def _by_cause(
    observed: Observed, tests: Sequence[TestStability], nights: Sequence[Night]
) -> tuple[GroupStability, ...]:
    """Tonight's root-cause classes (a test counts once per class), each with its trend across nights."""
    by_id = {t.test_id: t for t in tests}
    members: dict[str, list[ObservedTest]] = {}
    info: dict[str, Cause] = {}
    occurrences: Counter[str] = Counter()
    for obs in observed.tests:
        for cause, n in zip(obs.causes, obs.cause_occurrences, strict=True):
            members.setdefault(cause.key, []).append(obs)
            info.setdefault(cause.key, cause)
            occurrences[cause.key] += n
    groups = []
    for key, group in members.items():
        example = min(group, key=lambda o: (not o.counts.is_never_passed, o.test_id))
        groups.append(
            _group(
                key, [by_id[o.test_id] for o in group], title=info[key].title, hint=info[key].hint,
                occurrences=occurrences[key], categories=tuple(sorted({o.category for o in group})),
                example_test=example.test_id, example_message=example.message,
                trend=tuple(dict(n.causes).get(key, 0) for n in nights),
            )
        )  # fmt: skip
    groups.sort(key=lambda g: (g.name == "other", -g.tests, g.name))
    return tuple(groups)
