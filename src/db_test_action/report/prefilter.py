"""Which of a built-in root-cause regex's alternatives can match a haystack, decided by substring tests.

Split from classify.py (the rules and the classification) to keep modules small. `in` over a 2 KB
message takes well under a microsecond; a regex search costs more the more alternatives it tries at
every position, and a case-insensitive SQLSTATE alternative (`sqlstate 23505`) costs ~15 µs per
400-character haystack whether or not the haystack holds a SQLSTATE at all. So every top-level
alternative of a built-in pattern has literals one of which each of its matches contains
(tests/test_classify_prefilter.py generates matches from each alternative and checks), and a haystack is
searched with only the alternatives whose literal it holds. An alternative without its literal cannot
match anywhere, so the leftmost match, its span and its `detail` are those of the whole pattern: the
classification is the same as searching every rule's full regex (the same test checks that too).
"""

from __future__ import annotations

import re

from db_test_action.model import CauseRule

# Per built-in rule, per top-level alternative of its pattern, in order: the literals.
ALTERNATIVE_NEEDLES: dict[str, tuple[tuple[str, ...], ...]] = {
    "concurrent-ddl": (("tuple concurrently ",), ('unique constraint "pg_',)),
    "dependent-objects": (("DependentObjectsStillExist",), ("2BP01",), ("cannot drop ",)),
    "unique-violation": (("UniqueViolation",), ("23505",), ("duplicate key value violates unique constraint",)),
    "fk-violation": (("ForeignKeyViolation",), ("23503",), ("violates foreign key constraint",)),
    "deadlock": (("DeadlockDetected",), ("40P01",), ("deadlock detected",)),
    "serialization": (("SerializationFailure",), ("SerializationError",), ("40001",), ("could not serialize access",)),
    "too-many-connections": (
        ("TooManyConnections",), ("53300",), ("too many clients already",), ("remaining connection",),
    ),
    "database-in-use": (("ObjectInUse",), ("55006",), ("is being accessed by other users",)),
    "lock-timeout": (("LockNotAvailable",), ("55P03",), ("due to lock timeout",), ("could not obtain lock",)),
    "undefined-object": (("Undefined",), ("42P01",), ("42883",), ("42704",), (" does not exist",)),
    "event-loop": (("loop",), ("loop",), ("another operation is in progress",), ("loop",), ("loop",)),
    "connection": (
        *(("onnect",),) * 9,  # ConnectionRefusedError … connection failed
        ("0800",), ("57P01",), ("onnect",),  # SQLSTATE 08001-08006, admin shutdown, terminating connection
    ),
    "hang": (("did not finish: pytest was stopped",),),
    "timeout": (("imeout",), ("timed out",), ("QueryCanceled",), ("57014",), ("imeout",), ("imeout",)),
}  # fmt: skip

# Per rule, its literals once each (a haystack holding none of them skips the rule outright).
NEEDLES: dict[str, tuple[str, ...]] = {
    key: tuple(dict.fromkeys(needle for needles in alternatives for needle in needles))
    for key, alternatives in ALTERNATIVE_NEEDLES.items()
}


def split_alternatives(pattern: str) -> list[str]:
    """The top-level alternatives of a regex: `a|(b|c)|[|]|d` → `a`, `(b|c)`, `[|]`, `d`."""
    parts: list[str] = []
    depth, in_class, at, start = 0, False, 0, 0
    while at < len(pattern):
        char = pattern[at]
        if char == "\\":
            at += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(pattern[start:at])
            start = at + 1
        at += 1
    parts.append(pattern[start:])
    return parts


class Prefiltered:
    """A built-in rule's regex, searched with only the alternatives whose literals a haystack holds."""

    __slots__ = ("full", "needles", "pairs", "variants")

    def __init__(self, rule: CauseRule) -> None:
        alternatives = split_alternatives(rule.pattern)
        needles = ALTERNATIVE_NEEDLES[rule.key]
        if len(alternatives) != len(needles):  # a rule edited without its literals: a bug, caught by tests
            raise ValueError(f"{rule.key}: {len(alternatives)} alternatives but {len(needles)} literal sets")
        self.full = re.compile(rule.pattern)
        self.needles = NEEDLES[rule.key]
        self.pairs = tuple(zip(alternatives, needles, strict=True))
        self.variants: dict[tuple[str, ...], re.Pattern[str]] = {}  # at most 2^(literals) of them

    def regex_for(self, haystack: str) -> re.Pattern[str] | None:
        """The regex to search `haystack` with; None when no alternative can match it."""
        present = tuple([needle for needle in self.needles if needle in haystack])
        if not present:
            return None
        regex = self.variants.get(present)
        if regex is None:
            chosen = [alt for alt, needles in self.pairs if any(n in present for n in needles)]
            regex = self.full if len(chosen) == len(self.pairs) else re.compile("|".join(chosen))
            self.variants[present] = regex
        return regex
