"""Who collided with whom, from the server's log — and hints that fit that evidence. Pure.

A shared-state failure (a duplicate key, a deadlock, a concurrent CREATE, a DROP blocked or a table gone)
always has a second party: another test on another xdist worker. The failing test's error record names
the object; the *partner* is found only from evidence, never guessed:

- a deadlock's DETAIL (`Process 6486 waits for …; blocked by process 6485`) and a lock wait's
  `Process holding the lock: N` name the other backend; its `application_name` (the plugin sets
  `<worker> <node id>`; `log_connections` records it for every backend) names its worker and test;
- for a duplicate key, a catalog race, a blocked DROP or a missing table, the other worker's logged
  statement (`log_statement = mod`) that touched the same constraint's table (with the same key value
  when parameters were logged), function, extension, dependent table or dropped relation, while the
  failing test ran;
- for a serialization failure, the other worker's latest write (INSERT/UPDATE/DELETE) to a table the
  failing statement names — or, failing at COMMIT, one the failing transaction wrote.

Without such a record the collision says "partner unknown". The same evidence refines two hints: a
`relation … does not exist` whose relation another worker had just dropped (or the suite itself creates)
is not a missing migration; an extension race names the extension and `--extensions` that pre-creates it.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from db_test_action.model import Cause, Collision, Problem, TestResult
from db_test_action.report.evidence import ServerEvent, TestWindow

SLACK_S = 0.05
_KIND_BY_SQLSTATE = {
    "23505": "unique-violation",
    "40P01": "deadlock",
    "2BP01": "dependent-objects",
    "42P01": "undefined-object",
    "42883": "undefined-object",
    "42704": "undefined-object",
    "55P03": "lock-timeout",
    "40001": "serialization",
}
_STATEMENT = re.compile(r"^(?:statement|execute [^:]*): (?P<sql>.*)$", re.S)
_QUOTED = re.compile(r'"([^"]+)"')
_PIDS = re.compile(r"\b[Pp]rocess(?:es)?(?: holding the lock)?:? ((?:\d+(?:, )?)+)|\bprocess (\d+)")
_DDL = re.compile(
    r"\b(CREATE(?: OR REPLACE)?|ALTER|DROP)\s+(FUNCTION|EXTENSION|TABLE|TYPE|SCHEMA|INDEX|VIEW|SEQUENCE)"
    r"(?:\s+IF\s+(?:NOT\s+)?EXISTS)?\s+\"?([\w.]+)\"?",
    re.I,
)
_INSERT = re.compile(r"\b(?:INSERT\s+INTO|UPDATE)\s+\"?([\w.]+)\"?", re.I)
_WRITE = re.compile(r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(?:ONLY\s+)?\"?([\w.]+)\"?", re.I)
_READ = re.compile(r"\b(?:FROM|JOIN)\s+(?:ONLY\s+)?\"?([\w.]+)\"?", re.I)
_KEY = re.compile(r"Key \((?P<cols>[^)]*)\)=\((?P<value>.*)\) already exists")
_DEPENDENT = re.compile(r"on table (\S+) depends on")
_EXTENSION = re.compile(r"CREATE\s+EXTENSION\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)\"?", re.I)
_CATALOG = re.compile(
    r"pg_(?:extension_name|type_typname_nsp|proc_proname_args_nsp|namespace_nspname|class_relname_nsp)_index"
)


def kind_of(event: ServerEvent) -> str | None:
    """The shared-state class of an error record, from its SQLSTATE (None: not a collision kind)."""
    if event.sqlstate == "XX000" and "concurrently" in event.message:
        return "concurrent-ddl"
    if event.sqlstate == "23505" and _CATALOG.search(event.message):
        return "concurrent-ddl"
    return _KIND_BY_SQLSTATE.get(event.sqlstate or "")


def statement_of(event: ServerEvent) -> str | None:
    """The SQL of a `log_statement` record (`statement: …` or `execute <name>: …`), else None."""
    if event.severity != "LOG":
        return None
    match = _STATEMENT.match(event.message)
    return match.group("sql") if match else None


def _bare(name: str) -> str:
    return name.rsplit(".", 1)[-1].strip('"').lower()


@dataclass(frozen=True, slots=True)
class _Statement:
    timestamp: float
    pid: int | None
    database: str | None
    app: str | None
    sql: str
    params: str
    vxid: str | None = None


class Evidence:
    """The server's records indexed for partner lookups: statements per database in time order, each
    backend's application_name over time, and the test windows per worker."""

    def __init__(self, events: Iterable[ServerEvent], windows: Sequence[TestWindow]) -> None:
        self.apps: dict[int, list[tuple[float, str]]] = {}
        by_db: dict[str | None, list[_Statement]] = {}
        self.lock_waits: list[ServerEvent] = []
        for event in sorted(events, key=lambda e: e.timestamp):
            if event.pid is not None and event.application_name:
                self.apps.setdefault(event.pid, []).append((event.timestamp, event.application_name))
            elif event.pid is not None and event.message.startswith("connection authorized"):
                found = re.search(r"application_name=(.+?)(?: SSL| GSS|$)", event.message)
                if found:
                    self.apps.setdefault(event.pid, []).append((event.timestamp, found.group(1)))
            sql = statement_of(event)
            if sql is not None:
                params = event.detail or ""
                by_db.setdefault(event.database, []).append(
                    _Statement(
                        event.timestamp,
                        event.pid,
                        event.database,
                        event.application_name,
                        sql,
                        params,
                        event.vxid,
                    )
                )
            elif event.is_lock_wait:
                self.lock_waits.append(event)
        self.statements = by_db
        self.times = {db: [s.timestamp for s in rows] for db, rows in by_db.items()}
        self.windows: dict[str | None, list[TestWindow]] = {}
        for window in sorted(windows, key=lambda w: w.start):
            self.windows.setdefault(window.worker, []).append(window)

    def app_of(self, pid: int | None, at: float, given: str | None = None) -> str | None:
        if given:
            return given
        if pid is None:
            return None
        known = [app for t, app in self.apps.get(pid, ()) if t <= at + SLACK_S]
        return known[-1] if known else None

    def test_at(self, worker: str, at: float, app: str | None) -> str | None:
        """The test that worker was running at `at` (its application_name's node id when it names one)."""
        window = self.window_at(worker, at, app)
        return window.test_id if window else None

    def window_at(self, worker: str, at: float, app: str | None) -> TestWindow | None:
        live = [w for w in self.windows.get(worker, ()) if w.start - SLACK_S <= at <= w.end + SLACK_S]
        tail = app.split(" ", 1)[-1] if app and " " in app else ""
        named = [w for w in live if tail and (w.test_id == tail or w.test_id.startswith(tail))]
        if named:
            return named[0]
        return live[0] if len(live) == 1 else None

    def statements_between(self, database: str | None, start: float, end: float) -> list[_Statement]:
        rows = self.statements.get(database, [])
        times = self.times.get(database, [])
        return rows[bisect.bisect_left(times, start) : bisect.bisect_right(times, end)]


def worker_of(app: str | None) -> str | None:
    """`gw1 tests/x.py::t` → gw1 (the plugin's format); None when the name is not ours."""
    if not app or " " not in app:
        return None
    head = app.split(" ", 1)[0]
    return head if re.fullmatch(r"gw\d+|main", head) else None


def find_collisions(
    test_id: str, events: Sequence[ServerEvent], windows: Sequence[TestWindow], evidence: Evidence
) -> tuple[Collision, ...]:
    """One Collision per shared-state error record of this test (duplicates folded)."""
    out: dict[tuple[str, str | None, str | None], Collision] = {}
    for event in events:
        kind = kind_of(event)
        if kind is None or not event.is_error:
            continue
        window = next(
            (
                w
                for w in windows
                if w.test_id == test_id and w.start - SLACK_S <= event.timestamp <= w.end + SLACK_S
            ),
            None,
        )
        worker = window.worker if window else worker_of(event.application_name)
        start = window.start if window else event.timestamp - 1.0
        obj, partners, how = _partners(kind, event, worker, start, evidence)
        for partner_worker, partner_id in partners or [(None, None)]:
            key = (kind, obj, partner_id)
            seen = out.get(key)
            out[key] = (
                replace(seen, count=seen.count + 1)
                if seen
                else Collision(test_id, worker, partner_id, partner_worker, obj, kind, how)
            )
    return tuple(out.values())


def _partners(
    kind: str, event: ServerEvent, worker: str | None, start: float, ev: Evidence
) -> tuple[str | None, list[tuple[str, str]], str]:
    """(object, [(partner worker, partner test)], how it was found)."""
    if kind in ("deadlock", "lock-timeout"):
        pids = _other_pids(event, ev)
        obj = _first_relation(event)
        found = []
        for pid in pids:
            app = ev.app_of(pid, event.timestamp)
            other = worker_of(app)
            test = ev.test_at(other, event.timestamp, app) if other else None
            if other and test and other != worker:
                found.append((other, test))
        how = "deadlock DETAIL" if kind == "deadlock" else "lock wait: process holding the lock"
        return obj, found, how if found else ""
    sql = event.statement or ""
    if kind == "unique-violation":
        obj = (_QUOTED.findall(event.message) or [None])[0]
        table = _INSERT.search(sql)
        key = _KEY.search(event.detail or "")
        value = key.group("value") if key else None

        def touches(stmt: _Statement) -> bool:
            found = _INSERT.search(stmt.sql)
            return bool(table and found and _bare(found.group(1)) == _bare(table.group(1)))

        def same_key(stmt: _Statement) -> bool:
            return bool(value and f"'{value}'" in stmt.params)

        return obj, _matching(event, worker, start, ev, touches, same_key), "the other worker's INSERT"
    if kind == "concurrent-ddl":
        ddl = _DDL.search(sql)
        ext = _EXTENSION.search(sql)
        obj = _bare(ddl.group(3)) if ddl else (ext.group(1) if ext else None)

        def same_ddl(stmt: _Statement) -> bool:
            found = _DDL.search(stmt.sql)
            return bool(
                ddl
                and found
                and found.group(2).upper() == ddl.group(2).upper()
                and _bare(found.group(3)) == obj
            )

        return obj, _matching(event, worker, start, ev, same_ddl), "the other worker's concurrent DDL"
    if kind == "dependent-objects":
        dropped = re.search(r"cannot drop \S+ (\S+) because", event.message)
        obj = _bare(dropped.group(1)) if dropped else None
        dependents = {_bare(d) for d in _DEPENDENT.findall(event.detail or "")}

        def creates_dependent(stmt: _Statement) -> bool:
            found = _DDL.search(stmt.sql)
            return bool(
                found and found.group(1).upper().startswith("CREATE") and _bare(found.group(3)) in dependents
            )

        return (
            obj,
            _matching(event, worker, start, ev, creates_dependent),
            "the other worker created the dependent table",
        )
    if kind == "undefined-object":
        name = (_QUOTED.findall(event.message) or [""])[0]
        obj = _bare(name) if name else None

        def drops_it(stmt: _Statement) -> bool:
            found = _DDL.search(stmt.sql)
            return bool(obj and found and found.group(1).upper() == "DROP" and _bare(found.group(3)) == obj)

        return obj, _matching(event, worker, start, ev, drops_it), "the other worker's DROP"
    if kind == "serialization":
        tables = _tables_of(event, sql, ev)

        def writes_them(stmt: _Statement) -> bool:
            return any(_bare(t) in tables for t in _WRITE.findall(stmt.sql))

        obj = ", ".join(sorted(tables)) or None
        return obj, _matching(event, worker, start, ev, writes_them), "the other worker's write to that table"
    return None, [], ""


def _tables_of(event: ServerEvent, sql: str, ev: Evidence) -> set[str]:
    """The tables a failed statement names; for a COMMIT (serializable: the conflict shows at commit),
    the tables its transaction wrote (its logged statements carry the same virtual transaction id)."""
    tables = {_bare(t) for t in (*_WRITE.findall(sql), *_READ.findall(sql))}
    if tables or not event.vxid:
        return tables
    earlier = ev.statements_between(event.database, event.timestamp - LOOKBACK_S, event.timestamp)
    return {
        _bare(t)
        for s in earlier
        if s.pid == event.pid and s.vxid == event.vxid
        for t in _WRITE.findall(s.sql)
    }


LOOKBACK_S = 600.0  # how far back a partner's statement may lie (its test must still overlap the failing one)


def _matching(event, worker, start, ev: Evidence, touches, better=None) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """The other worker's test behind the *latest* statement on the same database before the error that
    touches the object (the row, function or table that is there now), provided that test's window
    overlaps the failing test's; when `better` singles some out (the same key value), the latest of those."""
    rows = [
        s
        for s in ev.statements_between(
            event.database, event.timestamp - LOOKBACK_S, event.timestamp + SLACK_S
        )
        if s.pid != event.pid and touches(s)
    ]
    if better is not None and any(better(s) for s in rows):
        rows = [s for s in rows if better(s)]
    for stmt in reversed(rows):
        app = ev.app_of(stmt.pid, stmt.timestamp, stmt.app)
        other = worker_of(app)
        if not other or other == worker:
            continue
        window = ev.window_at(other, stmt.timestamp, app)
        if window is None or window.end + SLACK_S < start:
            continue  # that test had ended before the failing one began: not this collision
        return [(other, window.test_id)]
    return []


def _other_pids(event: ServerEvent, ev: Evidence) -> list[int]:
    text = event.detail or ""
    if event.sqlstate == "55P03" or not text:  # lock timeout: who held it says the lock-wait line before
        waits = [w for w in ev.lock_waits if w.pid == event.pid and w.timestamp <= event.timestamp + SLACK_S]
        text = waits[-1].detail or "" if waits else ""
    pids: list[int] = []
    for many, one in _PIDS.findall(text):
        for part in (many or one).split(","):
            if part.strip().isdigit() and int(part) != event.pid and int(part) not in pids:
                pids.append(int(part))
    return pids


def _first_relation(event: ServerEvent) -> str | None:
    found = re.search(r"relation (\d+|\"?[\w.]+\"?) of database", event.detail or "")
    if found and not found.group(1).isdigit():
        return _bare(found.group(1))
    stmt = _INSERT.search(event.statement or "") or _DDL.search(event.statement or "")
    return _bare(stmt.groups()[-1]) if stmt else None


# --- hints that fit the evidence ------------------------------------------------------------------------

CONCURRENT_DROP = (
    "concurrent-drop",
    "Dropped by another worker",
    "the schema was there: another worker's teardown (drop_all / DROP TABLE) removed it while this test ran. "
    "Give each worker its own database (--db-per-worker) and stop dropping the schema per test "
    "(TRUNCATE … CASCADE or db_reset instead)",
)


def refine_causes(
    test: TestResult, collisions: Sequence[Collision], created: Mapping[str | None, set[str]]
) -> TestResult:
    """Problems whose hint the evidence contradicts get one that fits: a relation another worker dropped
    (or that the suite creates itself) is not a missing migration; an extension race names the extension."""
    dropped = {c.object for c in collisions if c.cause == "undefined-object" and c.partner_id}
    suite_made = set().union(*created.values()) if created else set()
    problems = [_refine(p, dropped, suite_made) for p in test.problems]
    if problems == list(test.problems) and not collisions:
        return test
    return replace(test, problems=tuple(problems), collisions=tuple(collisions))


def _refine(problem: Problem, dropped: set[str | None], suite_made: set[str]) -> Problem:
    cause = problem.cause
    if cause.key == "undefined-object":
        name = _QUOTED.search(problem.message)
        obj = _bare(name.group(1)) if name else None
        if obj and (obj in dropped or obj in suite_made):
            key, title, hint = CONCURRENT_DROP
            if obj not in dropped:
                hint = (
                    f"the suite creates {obj} itself, so it was not missing: it was dropped in between. "
                    + hint
                )
            return replace(problem, cause=Cause(key, title, hint, obj))
    if cause.key == "concurrent-ddl":
        ext = _EXTENSION.search(problem.text) or _EXTENSION.search(problem.message)
        if ext:
            name = ext.group(1)
            extensions = ",".join(dict.fromkeys(("pgcrypto", name)))  # the default set, plus this one
            hint = (
                f"two workers ran CREATE EXTENSION {name} at once: create it once, before the tests — in the "
                f"template database with `--extensions {extensions}` (db-test-action run/postgres, the "
                "action's extensions input) — not in a per-test or per-worker fixture"
            )
            return replace(problem, cause=Cause(cause.key, f"Concurrent CREATE EXTENSION {name}", hint, name))
    return problem


def created_relations(events: Iterable[ServerEvent]) -> dict[str | None, set[str]]:
    """Tables the suite itself creates (CREATE TABLE in the statement log), per database."""
    out: dict[str | None, set[str]] = {}
    for event in events:
        sql = statement_of(event)
        if sql is None:
            continue
        for verb, what, name in _DDL.findall(sql):
            if verb.upper().startswith("CREATE") and what.upper() == "TABLE":
                out.setdefault(event.database, set()).add(_bare(name))
    return out
