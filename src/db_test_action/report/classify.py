"""Root causes of failures (regex classes over message and traceback) and categories of tests.

Pure and reusable (the nightly-stability feature calls `classify_failure` too). The class keys are
stable strings: renderers, JSON and users' config refer to them. Rules match the exception text that
asyncpg, psycopg 3, psycopg2 and SQLAlchemy wrappers actually print, e.g.
`sqlalchemy.exc.InternalError: (sqlalchemy.dialects.postgresql.asyncpg.InternalServerError) tuple
concurrently updated` (SQLAlchemy 2.1) or `… asyncpg.Error) <class 'asyncpg.exceptions.DependentObjects
StillExistError'>: cannot drop table …` (2.0), and the SQLSTATE where a driver shows it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import PurePosixPath

from db_test_action.model import (
    CategoryRule,
    Cause,
    CauseGroup,
    CauseRule,
    Occurrence,
    Status,
    TestResult,
)
from db_test_action.report.prefilter import Prefiltered

_CATALOG_INDEX = (
    r"pg_(?:extension_name|type_typname_nsp|proc_proname_args_nsp|namespace_nspname|class_relname_nsp)_index"
)


def _c(code: str) -> str:
    """A numeric SQLSTATE only where it reads as one (`SQLSTATE 23505`, `pgcode='23505'`, `[23505]`):
    a bare `23505` is as likely an id or a status code in an assertion."""
    return rf"(?:(?i:sqlstate|pgcode|state_code|error code)\W{{0,4}}{code}\b|[\[(]{code}[\])])"


BUILTIN_RULES: tuple[CauseRule, ...] = (
    CauseRule(
        "concurrent-ddl",
        "Concurrent DDL (catalog race)",
        "two workers ran the same CREATE/ALTER at once: create functions/extensions once per session "
        "(or under an advisory lock, or in the template database), not per test",
        rf"tuple concurrently (?:updated|deleted)|unique constraint \"(?P<detail>{_CATALOG_INDEX})\"",
    ),
    CauseRule(
        "dependent-objects",
        "DROP blocked by dependent objects",
        "drop in dependency order (or DROP … CASCADE / metadata.drop_all); better, give each worker its own "
        "database so tests never drop shared tables",
        r"DependentObjectsStillExist|\b2BP01\b|cannot drop (?P<detail>\S{1,200} \S{1,200}) because other objects depend on it",
    ),
    CauseRule(
        "unique-violation",
        "Unique violation (shared rows)",
        "tests insert the same keys: use unique values per test (uuid4) or isolate data per test "
        "(transaction rollback) or per worker (own database)",
        rf"UniqueViolation|{_c('23505')}|duplicate key value violates unique constraint \"(?P<detail>[^\"]{{1,200}})\"",
    ),
    CauseRule(
        "fk-violation",
        "Foreign-key violation",
        "create parent rows in the fixture first and delete children before parents (or TRUNCATE … CASCADE)",
        rf"ForeignKeyViolation|{_c('23503')}|violates foreign key constraint \"(?P<detail>[^\"]{{1,200}})\"",
    ),
    CauseRule(
        "deadlock",
        "Deadlock",
        "two tests or workers lock the same rows/tables in different order: isolate data per worker or take "
        "locks in a fixed order",
        r"DeadlockDetected|\b40P01\b|deadlock detected",
    ),
    CauseRule(
        "serialization",
        "Serialization failure",
        "concurrent writers on shared rows under REPEATABLE READ/SERIALIZABLE: retry the transaction, or "
        "isolate test data",
        rf"SerializationFailure|SerializationError|{_c('40001')}|could not serialize access",
    ),
    CauseRule(
        "too-many-connections",
        "Too many connections",
        "workers × pool size exceeds max_connections: use NullPool or a small pool_size in tests, dispose "
        "engines at teardown, or raise --max-connections",
        rf"TooManyConnections|{_c('53300')}|too many clients already|remaining connection slots are reserved",
    ),
    CauseRule(
        "database-in-use",
        "Database in use",
        "close sessions and `await engine.dispose()` before DROP DATABASE, or use DROP DATABASE … WITH (FORCE)",
        rf"ObjectInUse|{_c('55006')}|database \"(?P<detail>[^\"]{{1,200}})\" is being accessed by other users",
    ),
    CauseRule(
        "lock-timeout",
        "Lock timeout",
        "a test or leftover session holds a lock: commit or roll back in fixtures and close sessions between "
        "tests",
        r"LockNotAvailable|\b55P03\b|canceling statement due to lock timeout|could not obtain lock",
    ),
    CauseRule(
        "undefined-object",
        "Undefined table or function",
        "the schema or extension is missing in this database: run migrations/create_all before the tests and "
        "install extensions (e.g. pgcrypto) in the per-worker template",
        rf"Undefined(?:Table|Function|Object|Column)|\b42P01\b|{_c('42883')}|{_c('42704')}"
        r"|(?:relation|function|type) (?P<detail>\"?[\w.]{1,200}\"?(?:\([^)]{0,200}\))?) does not exist",
    ),
    CauseRule(
        "event-loop",
        "asyncio event-loop misuse",
        "an engine/connection made on one event loop is used on another: create async engines inside "
        "fixtures with the same loop_scope as the tests, and dispose them at teardown",
        r"attached to a different (?:event )?loop|Event loop is closed|another operation is in progress"
        r"|different event loop|no running event loop",
    ),
    CauseRule(
        "connection",
        "Connection refused or closed",
        "the database was unreachable or dropped the connection: check DATABASE_URL and that the server is up, "
        "and that no test terminates other backends",
        r"ConnectionRefusedError|Connection refused|connection is closed|ConnectionDoesNotExist"
        r"|server closed the connection|could not connect to server|connection was closed|Connect call failed"
        rf"|connection failed|{_c('0800[1-6]')}|\b57P01\b|terminating connection",
    ),
    CauseRule(
        "hang",
        "Hung at a time limit",
        "it was still running when pytest was stopped at --timeout: 'Stopped at a time limit' names the lock "
        "it waited on and the test holding it; end transactions in fixtures (commit/rollback) before the test body",
        r"did not finish: pytest was stopped",
    ),
    CauseRule(
        "timeout",
        "Timeout",
        "something waited too long: look for a held lock or a hung connection; raise the timeout only if the "
        "work is genuinely slow",
        rf"TimeoutError|timed out|QueryCanceled|{_c('57014')}|statement timeout|Failed: Timeout",
    ),
)

OTHER = Cause("other", "Other", "not a known database/fixture pattern: read the message below")

_COMPILED: dict[tuple[CauseRule, ...], tuple[tuple[CauseRule, re.Pattern[str] | Prefiltered], ...]] = {}


def _compiled(
    extra_rules: tuple[CauseRule, ...],
) -> tuple[tuple[CauseRule, re.Pattern[str] | Prefiltered], ...]:
    """User rules (a regex, always searched) then built-ins (searched with what their literals allow)."""
    compiled = _COMPILED.get(extra_rules)
    if compiled is None:
        if len(_COMPILED) > 64:
            _COMPILED.clear()
        compiled = _COMPILED[extra_rules] = (
            *((rule, re.compile(rule.pattern)) for rule in extra_rules),
            *_builtins(),
        )
    return compiled


@lru_cache(maxsize=1)
def _builtins() -> tuple[tuple[CauseRule, Prefiltered], ...]:
    return tuple((rule, Prefiltered(rule)) for rule in BUILTIN_RULES)


def classify_failure(message: str, text: str = "", extra_rules: Sequence[CauseRule] = ()) -> Cause:
    """The root-cause class of one failure. User rules (config `classes`) are tried before built-ins.

    The message is searched first (it is the final exception); then the `E   …` lines of the
    traceback, which include chained exceptions (the asyncpg error under a SQLAlchemy wrapper).
    Either way the first rule, in order, that matches anywhere in the haystack wins.
    """
    return _classify(message, text, tuple(extra_rules))


def _classify(message: str, text: str, extra_rules: tuple[CauseRule, ...]) -> Cause:
    cause = _classify_text(message, extra_rules)  # usually decides: a few distinct messages, many tests
    if cause is None and text:
        cause = _classify_text("\n".join(_e_lines(text)) or text[-4000:], extra_rules)
    return cause or OTHER


@lru_cache(maxsize=4096)
def _classify_text(haystack: str, extra_rules: tuple[CauseRule, ...]) -> Cause | None:
    """The first rule that matches, with its detail; None when none does. Substring tests of a built-in
    rule's literals decide whether its regex runs at all, and with which alternatives (prefilter.py;
    every pattern is linear: bounded repeats)."""
    if not haystack:
        return None
    for rule, searcher in _compiled(extra_rules):
        if isinstance(searcher, Prefiltered):
            regex = searcher.regex_for(haystack)
            if regex is None:
                continue  # rules in order: the literals of the rules after the first match are never tested
        else:
            regex = searcher
        match = regex.search(haystack)
        if match:
            detail = match.group("detail") if "detail" in regex.groupindex else None
            if not detail and "detail" in regex.groupindex:
                # The exception name may match before the sentence that names the object: look further.
                details = (m.group("detail") for m in regex.finditer(haystack, match.end()))
                detail = next((d for d in details if d), None)
            return Cause(rule.key, rule.title, rule.hint, detail)
    return None


def _e_lines(text: str) -> list[str]:
    """What follows `E` and its spaces on each line (pytest's lines of the exception): `^E +(.*)$`, without
    a regex that tries every position of a long traceback."""
    pieces = text.split("\nE ")
    lines = [piece.split("\n", 1)[0].lstrip(" ") for piece in pieces[1:]]
    if text.startswith("E "):
        lines.insert(0, pieces[0].split("\n", 1)[0][2:].lstrip(" "))
    return lines


# --- categories -------------------------------------------------------------------------------------------


def default_category(file: str | None, test_id: str) -> str:
    """The test module's name without `test_` (`tests/test_workspace_isolation.py` → `workspace_isolation`)."""
    if file:
        return _category_of_file(file)
    return _category_of_id(test_id.split("::", 1)[0] if "::" in test_id else "")


@lru_cache(maxsize=4096)
def _category_of_file(file: str) -> str:
    return _strip_test(PurePosixPath(file).stem)


@lru_cache(maxsize=4096)
def _category_of_id(head: str) -> str:
    return _strip_test(head.rsplit(".", 1)[-1] if head else "other")


def _strip_test(stem: str) -> str:
    if stem.startswith("test_"):
        stem = stem[5:]
    elif stem.endswith("_test"):
        stem = stem[:-5]
    return stem or "other"


def category_for(occ: Occurrence, rules: Sequence[CategoryRule] = ()) -> str:
    """First configured category whose glob matches the node id or file (or whose marker the test has)."""
    for rule in rules:
        for pattern in rule.patterns:
            if pattern.startswith("marker:"):
                if pattern[7:] in occ.markers:
                    return rule.name
            elif fnmatch.fnmatchcase(occ.test_id, pattern) or (
                occ.file and fnmatch.fnmatchcase(occ.file, pattern)
            ):
                return rule.name
    return default_category(occ.file, occ.test_id)


# --- grouping by cause ------------------------------------------------------------------------------------


def group_causes(tests: Iterable[TestResult]) -> tuple[CauseGroup, ...]:
    """One row per cause, most tests first: 100 tests hit by one pgcrypto race are one row, not 100 stories.

    A test counts once per cause even if several attempts or phases failed the same way.
    """
    acc: dict[str, dict] = {}
    for test in tests:
        if not test.status.is_problem:
            continue
        seen: set[str] = set()
        for problem in test.problems:
            key = problem.cause.key
            group = acc.setdefault(
                key,
                {"cause": problem.cause, "tests": [], "occ": 0, "cats": {}, "details": {}, "fixture": False},
            )
            group["occ"] += 1
            if problem.cause.detail:
                group["details"][problem.cause.detail] = None
            if key in seen:
                continue
            seen.add(key)
            group["tests"].append((test, problem))
            group["cats"][test.category] = None
    groups = []
    for data in acc.values():
        # Prefer an example from a test that failed for good (not a flaky one), and a fixture error.
        example_test, example_problem = min(
            data["tests"], key=lambda tp: (tp[0].status is Status.FLAKY, tp[1].phase.value == "call")
        )
        cause = data["cause"]
        groups.append(
            CauseGroup(
                cause=Cause(cause.key, cause.title, cause.hint, None),
                tests=len(data["tests"]),
                occurrences=data["occ"],
                categories=tuple(sorted(data["cats"])),
                example_test=example_test.test_id,
                example_message=example_problem.message,
                test_ids=tuple(t.test_id for t, _ in data["tests"]),
                details=tuple(sorted(data["details"]))[:20],
            )
        )
    groups.sort(key=lambda g: (g.cause.key == "other", -g.tests, g.cause.key))
    return tuple(groups)
