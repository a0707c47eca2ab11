"""The stability history: one JSON line per night, capped, compact; read and written as a local file.

Why JSON lines and not SQLite: the file lives on a branch (GitHub contents API) or in an artifact, where a
text diff per night is reviewable and a binary blob is not; and 365 nights × 5,000 tests fit in well under
a megabyte in this layout:

    {"format": "db-test-action-history", "version": 1, "ids": ["tests/test_a.py::test_x", …]}
    {"night": "2025-01-31", "commit": "…", "runs": "GGxG", "present": [[0, 4999]],
     "clean": [4, 4, 0, 0, 0, 0], "odd": [[17, 4, 2, 2, 0, 1, 0]], "causes": {"unique-violation": 2},
     "conflicts": [[17, 18, "workspaces_pkey", "unique-violation", 2]]}

The first line is the node-id table (sorted); a night names its tests as index ranges into it (`[start,
end)`, nearly always one or two ranges), the counts shared by every clean test (`clean`: runs, passes,
failures, fixture errors, reruns, rerun passes) and the few tests that differ (`odd`: index then counts).
`runs` is one letter per suite run: G green, x not; `conflicts` (optional) the night's colliding pairs
as two test indexes, the object (or null), the cause and the count. Saving keeps the last `keep` nights and drops ids no
kept night mentions, so the file never grows without bound.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from db_test_action.config.settings import DEFAULT_KEEP_NIGHTS
from db_test_action.errors import DbTestActionError
from db_test_action.stability.conflicts import Conflict
from db_test_action.stability.nightly import Night, TestCounts

FORMAT = "db-test-action-history"
VERSION = 1


def add_night(nights: Sequence[Night], night: Night, keep: int = DEFAULT_KEEP_NIGHTS) -> tuple[Night, ...]:
    """Append tonight, replacing an earlier night with the same label (a re-run of the workflow must not
    count twice), and keep the newest `keep` nights."""
    kept = [n for n in nights if n.label != night.label]
    kept.append(night)
    return tuple(kept[-keep:]) if keep > 0 else ()


def dump_history(nights: Sequence[Night]) -> str:
    """Nights (oldest first) → the JSON-lines text; ids compacted to those the nights mention."""
    ids = sorted(
        {tid for n in nights for tid in n.present} | {t for n in nights for c in n.conflicts for t in c.tests}
    )
    index = {tid: i for i, tid in enumerate(ids)}
    lines = [json.dumps({"format": FORMAT, "version": VERSION, "ids": ids}, ensure_ascii=False)]
    ranges_of: dict[int, list[list[int]]] = {}
    for night in nights:
        key = id(night.present)
        if key not in ranges_of:
            ranges_of[key] = _ranges(index[tid] for tid in night.present)
        record: dict[str, Any] = {
            "night": night.label,
            "commit": night.commit,
            "runs": "".join("G" if green else "x" for green in night.runs),
            "present": ranges_of[key],
            "clean": list(night.clean.as_tuple()),
            "odd": [[index[tid], *counts.as_tuple()] for tid, counts in night.odd],
            "causes": dict(night.causes),
        }
        if night.conflicts:
            record["conflicts"] = [
                [index[c.tests[0]], index[c.tests[1]], c.object, c.cause, c.count] for c in night.conflicts
            ]
        lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    return "\n".join(lines) + "\n"


def _ranges(indexes: Any) -> list[list[int]]:
    out: list[list[int]] = []
    for i in sorted(indexes):
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


def parse_history(text: str, where: str) -> tuple[Night, ...]:
    """The inverse of `dump_history`; a bad line is a one-line error naming `where:line`."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return ()
    header = _json(lines[0], where, 1)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise DbTestActionError(
            f"{where}:1: not a db-test-action history (no format header); pass another file or delete it"
        )
    if header.get("version") != VERSION:
        raise DbTestActionError(
            f"{where}:1: history version {header.get('version')!r} is not supported; this version reads {VERSION}"
        )
    ids = header.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise DbTestActionError(f"{where}:1: ids must be a list of node ids; regenerate the history")
    ids_t = tuple(ids)
    shared: dict[str, tuple[str, ...]] = {}  # identical test sets share one tuple in memory
    nights = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            nights.append(_night(_json(line, where, number), ids_t, shared))
        except (
            KeyError,
            TypeError,
            ValueError,
            IndexError,
            AttributeError,
            OverflowError,
            RecursionError,
        ) as exc:
            raise DbTestActionError(
                f"{where}:{number}: malformed night ({type(exc).__name__}: {str(exc)[:200]}); fix or drop this line"
            ) from None
    return tuple(nights)


def _json(line: str, where: str, number: int) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise DbTestActionError(f"{where}:{number}: not JSON ({exc.msg}); fix or drop this line") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise DbTestActionError(
            f"{where}:{number}: not usable JSON ({str(exc)[:100]}); fix or drop this line"
        ) from None
    except RecursionError:
        raise DbTestActionError(f"{where}:{number}: nested too deeply; fix or drop this line") from None


def _night(data: Any, ids: tuple[str, ...], shared: dict[str, tuple[str, ...]]) -> Night:
    if not isinstance(data, dict):
        raise TypeError("expected an object")
    key = json.dumps(data["present"], separators=(",", ":"))
    present = shared.get(key)
    if present is None:
        parts: list[str] = []
        for start, end in data["present"]:
            if not 0 <= start < end <= len(ids):
                raise IndexError(f"range {start}..{end} outside the id table")
            parts.extend(ids[start:end])
        present = shared[key] = tuple(parts)
    clean = _counts(data["clean"])
    odd = tuple((ids[_index(row[0], ids)], _counts(row[1:])) for row in data.get("odd", ()))
    runs = data.get("runs", "")
    if not isinstance(runs, str) or set(runs) - {"G", "x"}:
        raise ValueError(f"runs must be a string of G and x, got {runs!r}")
    causes = data.get("causes") or {}
    return Night(
        label=str(data["night"]),
        runs=tuple(c == "G" for c in runs),
        present=present,
        clean=clean,
        odd=odd,
        causes=tuple(sorted((str(k), int(v)) for k, v in causes.items())),
        commit=str(data.get("commit") or ""),
        conflicts=tuple(_conflict(row, ids) for row in data.get("conflicts") or ()),
    )


def _conflict(row: Any, ids: tuple[str, ...]) -> Conflict:
    if not isinstance(row, list) or len(row) != 5:
        raise ValueError(f"a conflict must be [test, test, object, cause, count], got {row!r}"[:200])
    a, b, obj, cause, count = row
    if not (obj is None or isinstance(obj, str)) or not isinstance(cause, str):
        raise TypeError("a conflict's object and cause must be text")
    if type(count) is not int or count < 1:
        raise ValueError(f"a conflict's count must be a whole number >= 1, got {count!r}")
    return Conflict((ids[_index(a, ids)], ids[_index(b, ids)]), obj, cause, count)


def _index(value: Any, ids: tuple[str, ...]) -> int:
    if type(value) is not int or not 0 <= value < len(ids):
        raise IndexError(f"test index {value!r} outside the id table")
    return value


MAX_COUNT = 10**9  # runs of one test in one night: far above any real night, far below float and int64 limits


def _counts(values: Any) -> TestCounts:
    if (
        not isinstance(values, list)
        or len(values) != 6
        or not all(type(v) is int and 0 <= v <= MAX_COUNT for v in values)
    ):
        raise ValueError(f"counts must be 6 whole numbers from 0 to {MAX_COUNT:,}, got {str(values)[:80]}")
    return TestCounts(*values)


# --- the local file edge ---------------------------------------------------------------------------------
