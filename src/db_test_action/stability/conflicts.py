"""The nightly conflict list: which tests collide most, over the nights of the window. Pure.

Each failing test's collisions (report/collisions.py: the other test, named by server-log evidence) are
counted per unordered pair and object, so "these two tests collide on workspaces_pkey 6 times" tops the
list whichever of the two happened to lose. Pairs whose partner is unknown are counted apart. Each night
keeps its own list in the history (history.py), so a pair that collides once a week still adds up: the
list covers the stability window, not only tonight.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from db_test_action.model import TestResult

CONFLICTS_KEPT = 20


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two tests that collided `count` times on `object` (`cause`: the class, e.g. unique-violation)."""

    tests: tuple[str, str]
    object: str | None
    cause: str
    count: int
    nights: int = 1  # nights of the window it was seen on


def conflict_list(
    tests: Iterable[TestResult], limit: int = CONFLICTS_KEPT
) -> tuple[tuple[Conflict, ...], int]:
    """(the most frequent pairs, how many collisions named no partner)."""
    counts: dict[tuple[tuple[str, str], str | None, str], int] = {}
    unknown = 0
    for test in tests:
        for c in test.collisions:
            if not c.partner_id:
                unknown += c.count
                continue
            pair = tuple(sorted((c.test_id, c.partner_id)))
            key = ((pair[0], pair[1]), c.object, c.cause)
            counts[key] = counts.get(key, 0) + c.count
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1] or ""))
    return tuple(Conflict(pair, obj, cause, n) for (pair, obj, cause), n in ranked[:limit]), unknown


def merge_conflicts(
    nights: Iterable[Iterable[Conflict]], limit: int = CONFLICTS_KEPT
) -> tuple[Conflict, ...]:
    """Several nights' lists (each night's from its history line) → one, counts summed, most first."""
    counts: dict[tuple[tuple[str, str], str | None, str], list[int]] = {}
    for night in nights:
        for c in night:
            seen = counts.setdefault((c.tests, c.object, c.cause), [0, 0])
            seen[0] += c.count
            seen[1] += c.nights
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0][0], kv[0][1] or ""))
    return tuple(Conflict(pair, obj, cause, n, k) for (pair, obj, cause), (n, k) in ranked[:limit])
