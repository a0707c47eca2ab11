"""Split a suite's node ids into shards by recorded durations; build pytest-split's durations file.

Pure: no files, no clock. Callers pass in node ids (in collection order) and durations; every machine
computes the same split from the same inputs, so each matrix job knows its own shard and the manifest
(`node id -> shard`) it writes is identical on all of them.

The algorithm is longest-processing-time-first (LPT): units sorted by estimated duration, each to the
least-loaded shard. Ties break on (load, test count, shard index), so zero-duration units still spread
and no shard is empty while there are at least as many tests as shards. Tests without a recorded
duration get the mean of the recorded ones (pytest-split's rule), 1 s when nothing is recorded.

Scope grouping: tests in one module or class often share an expensive module/class-scoped fixture;
splitting them pays the fixture twice and makes the recorded durations lie (the setup is booked on the
first test only). So the split first tries whole modules, then whole classes, as units, capped at a
fraction of a shard's ideal load, from the coarsest cap to the finest, and keeps the first whose
predicted makespan is within `tolerance` of the plain per-test LPT split. benchmarks/shard_balance.py
measures what that costs and saves.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from db_test_action.errors import EXIT_USAGE, DbTestActionError
from db_test_action.model import Occurrence

DEFAULT_DURATION_S = 1.0
# Largest unit allowed, as a fraction of one shard's ideal load; None = a whole module/class.
_GROUP_CAPS: tuple[float | None, ...] = (None, 0.5, 0.25, 0.1, 0.05, 0.02)


@dataclass(frozen=True, slots=True)
class Shard:
    number: int  # 1-based, like pytest-split's --group and a GitHub matrix
    node_ids: tuple[str, ...]  # in collection order
    predicted_s: float


@dataclass(frozen=True, slots=True)
class Split:
    shards: tuple[Shard, ...]
    unit: str  # "module", "class" or "test": the coarsest unit kept together
    group_cap: float | None  # the cap that was accepted (fraction of a shard's ideal load)

    def shard_of(self) -> dict[str, int]:
        return {node_id: shard.number for shard in self.shards for node_id in shard.node_ids}

    @property
    def makespan_s(self) -> float:
        return max((s.predicted_s for s in self.shards), default=0.0)


def scope_of(node_id: str, level: str) -> str:
    """`a/test_x.py::TestC::test_y[1]` → `a/test_x.py` (module) or `a/test_x.py::TestC` (class)."""
    parts = node_id.split("::")
    if level == "module" or len(parts) <= 2:
        return parts[0]
    return "::".join(parts[:-1])


def estimate_durations(node_ids: Sequence[str], durations: Mapping[str, float]) -> dict[str, float]:
    """Recorded durations for the collected ids; the others get the mean of those (pytest-split's rule)."""
    known = [durations[n] for n in node_ids if n in durations]
    mean = sum(known) / len(known) if known else DEFAULT_DURATION_S
    return {n: durations.get(n, mean) for n in node_ids}


def split_tests(
    node_ids: Sequence[str],
    durations: Mapping[str, float],
    shards: int,
    *,
    group_scopes: bool = True,
    tolerance: float = 0.01,
) -> Split:
    """Assign every node id to exactly one of `shards` shards (see the module docstring)."""
    if shards < 1:
        raise DbTestActionError(f"--shards: must be at least 1, got {shards}; give 1 or more", EXIT_USAGE)
    ids = list(dict.fromkeys(node_ids))  # duplicates (same path given twice) would run twice
    est = estimate_durations(ids, durations)
    order = {n: i for i, n in enumerate(ids)}
    plain = _lpt([(n,) for n in ids], est, shards)
    best, unit, cap = plain, "test", None
    if group_scopes and shards > 1 and len(ids) >= shards:
        limit = _makespan(plain, est) * (1 + tolerance)
        ideal = sum(est.values()) / shards
        found = False
        for level in ("module", "class"):
            for group_cap in _GROUP_CAPS:
                units = _units(ids, est, level, None if group_cap is None else group_cap * ideal)
                candidate = _lpt(units, est, shards)
                if all(candidate) and _makespan(candidate, est) <= limit:
                    best, unit, cap, found = candidate, level, group_cap, True
                    break
            if found:
                break
    out = tuple(
        Shard(i + 1, tuple(sorted(members, key=order.__getitem__)), round(sum(est[n] for n in members), 6))
        for i, members in enumerate(best)
    )
    return Split(out, unit, cap)


def _units(
    ids: list[str], est: Mapping[str, float], level: str, cap_s: float | None
) -> list[tuple[str, ...]]:
    groups: dict[str, list[str]] = {}
    for n in ids:
        groups.setdefault(scope_of(n, level), []).append(n)
    units: list[tuple[str, ...]] = []
    for members in groups.values():
        total = sum(est[n] for n in members)
        if cap_s is None or total <= cap_s or len(members) == 1:
            units.append(tuple(members))
        elif level == "module":
            # Too big as a module: fall back to its classes (and module-level functions), then to tests.
            units.extend(_units(members, est, "class", cap_s))
        else:
            units.extend((n,) for n in members)
    return units


def _lpt(units: list[tuple[str, ...]], est: Mapping[str, float], shards: int) -> list[list[str]]:
    sized = sorted(((sum(est[n] for n in u), u) for u in units), key=lambda pair: (-pair[0], pair[1][0]))
    heap = [(0.0, 0, i) for i in range(shards)]  # (load, tests, index): deterministic ties
    out: list[list[str]] = [[] for _ in range(shards)]
    for size, unit in sized:
        load, count, index = heapq.heappop(heap)
        out[index].extend(unit)
        heapq.heappush(heap, (load + size, count + len(unit), index))
    return out


def _makespan(assignment: list[list[str]], est: Mapping[str, float]) -> float:
    return max((sum(est[n] for n in members) for members in assignment), default=0.0)


# --- the durations file (pytest-split's format: {"node id": seconds}, sorted keys) ---------------------


def parse_durations(text: str, source: str) -> dict[str, float]:
    """pytest-split's file: a JSON object, or its older list of [node id, seconds] pairs."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DbTestActionError(
            f"{source}: not JSON ({exc}); regenerate it with `db-test-action durations`", EXIT_USAGE
        ) from None
    if isinstance(data, list):
        try:
            data = dict(data)
        except (TypeError, ValueError):
            raise DbTestActionError(
                f"{source}: a list but not of [node id, seconds] pairs; use pytest-split's format", EXIT_USAGE
            ) from None
    if not isinstance(data, dict):
        raise DbTestActionError(
            f"{source}: not a JSON object of node id -> seconds; use pytest-split's format", EXIT_USAGE
        )
    out: dict[str, float] = {}
    for key, value in data.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise DbTestActionError(
                f"{source}: {key!r}: {value!r} is not a duration in seconds; use a number >= 0", EXIT_USAGE
            )
        out[str(key)] = float(value)
    return out


def format_durations(durations: Mapping[str, float]) -> str:
    """Byte-for-byte the layout pytest-split's --store-durations writes (sorted keys, indent 4)."""
    return json.dumps({k: round(v, 6) for k, v in durations.items()}, sort_keys=True, indent=4) + "\n"


def durations_from_occurrences(occurrences: Iterable[Occurrence]) -> dict[str, float]:
    """Median over result files of each test's first attempt (setup + call + teardown).

    One file is one run (a repeat or a shard); within it a test's first attempt may span several
    <testcase> elements (a body failure plus a teardown error), which are summed. Rerun attempts are
    left out: they pay warm caches and re-setup that a normal run does not. Without an `attempt`
    property (plain pytest), rerun attempts cannot be told apart from the first, so all are summed.
    """
    per_run: dict[tuple[str, str], dict[int, float]] = {}
    for occ in occurrences:
        if occ.test_id.startswith("<"):
            continue  # unnamed testcases cannot be split on
        attempts = per_run.setdefault((occ.test_id, occ.source), {})
        key = occ.attempt if occ.attempt is not None else 0
        attempts[key] = attempts.get(key, 0.0) + occ.duration_s
    samples: dict[str, list[float]] = {}
    for (test_id, _source), attempts in per_run.items():
        samples.setdefault(test_id, []).append(attempts[min(attempts)])
    return {test_id: _median(values) for test_id, values in samples.items()}


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
