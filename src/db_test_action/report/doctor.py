"""The fixture doctor: which fixture will break under xdist, predicted from one serial run. Pure.

A serial run of the seed's suite is green; the same fixtures fail under two workers. What makes them
fail is visible in the server's statement log (`log_statement = mod`: DDL and data-modifying statements
with their parameters, plus connections) once each statement is tied to the test and the fixture that
ran it (the plugin's fixture spans, `DB_TEST_ACTION_PLUGIN_FIXTURES`):

- DDL per test — the same CREATE EXTENSION / CREATE [OR REPLACE] FUNCTION / CREATE TABLE in many tests:
  two workers run them at once (`tuple concurrently updated`, catalog duplicate keys);
- schema teardown per test — DROP TABLE in many tests' teardown: another worker's tables vanish
  (`relation … does not exist`), and a table outside the dropped set that references one makes the DROP
  fail (`cannot drop table … because other objects depend on it`);
- fixed keys — the same primary-key/unique values inserted by different tests: duplicate keys once two
  workers share a database;
- connections left open — a connection a test opened (outside session-scoped fixtures) still open after
  its teardown: engines or pools not disposed, which multiplies per worker against max_connections;
- connection headroom — the most connections the serial run held at once, times the workers planned
  (the manifest's `workers`), against the server's `max_connections` less the superuser's reserve: a
  suite that fits serially and runs out of connections under xdist ("too many clients already").
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from db_test_action.model import DoctorFinding, Occurrence
from db_test_action.report.collisions import statement_of
from db_test_action.report.evidence import ServerEvent, _same_database

SLACK_S = 0.05
SHOWN_TESTS = 5
_DDL = re.compile(
    r"^\s*(CREATE(?:\s+OR\s+REPLACE)?|DROP)\s+(FUNCTION|EXTENSION|TABLE)(?:\s+IF\s+(?:NOT\s+)?EXISTS)?\s+\"?([\w.]+)\"?",
    re.I,
)
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+\"?([\w.]+)\"?\s*\(([^)]*)\)\s*VALUES\s*\(([^)]*)\)", re.I | re.S)
_PARAM = re.compile(r"\$(\d+) = (NULL|'(?:[^']|'')*')")
_KEY_CONSTRAINT = re.compile(r"\b(PRIMARY\s+KEY|UNIQUE)\s*\(([^)]*)\)", re.I)
_REFERENCES = re.compile(r"\bREFERENCES\s+\"?([\w.]+)\"?", re.I)

FIXES = {
    "ddl-per-test": (
        "DDL per test",
        "move it to a session-scoped fixture, or into the template with `--db-setup` (run once per worker "
        "database), so workers never run the same CREATE at once",
    ),
    "schema-teardown-per-test": (
        "Schema dropped per test",
        "keep the schema for the session and empty the tables instead: TRUNCATE … CASCADE, or the `db_reset` "
        "fixture; a table outside the metadata that references a dropped one makes drop_all fail",
    ),
    "fixed-keys": (
        "Same keys inserted by different tests",
        "these tests collide under xdist: use uuid4 (or other unique values) per test, or per-worker databases "
        "(`--db-per-worker`)",
    ),
    "connection-headroom": (
        "Connections per worker exceed max_connections",
        "each worker holds what one serial session held at once: dispose engines, use NullPool or a small "
        "pool_size in tests, run fewer workers, or raise max_connections (`--max-connections`, or "
        "`server-settings: max_connections=N`)",
    ),
    "connections-left-open": (
        "Connections left open after the test",
        "dispose engines (`await engine.dispose()`) and close pools in the fixture's teardown, or share one "
        "session-scoped engine; each worker multiplies what stays open against max_connections",
    ),
}


@dataclass(frozen=True, slots=True)
class _Span:
    name: str
    scope: str
    where: str
    phase: str
    start: float
    end: float

    @property
    def label(self) -> str:
        return f"{self.name} ({self.where})"


@dataclass(frozen=True, slots=True)
class _Attempt:
    test_id: str
    start: float
    end: float
    database: str | None
    worker: str | None
    spans: tuple[_Span, ...]


def _spans(raw: str | None) -> tuple[_Span, ...]:
    try:
        items = json.loads(raw or "[]")
        return tuple(_Span(str(a), str(b), str(c), str(d), float(e), float(f)) for a, b, c, d, e, f in items)
    except (ValueError, TypeError):
        return ()  # a damaged property: the statements still count, without a fixture name


def attempts(occurrences: Iterable[Occurrence]) -> list[_Attempt]:
    """One per timed attempt that carries the plugin's fixture spans (a doctor run)."""
    out = {}
    for occ in occurrences:
        if occ.fixtures is None or occ.started_at is None or occ.finished_at is None:
            continue
        out[(occ.test_id, occ.started_at)] = _Attempt(
            occ.test_id, occ.started_at, occ.finished_at, occ.database, occ.worker, _spans(occ.fixtures)
        )
    return sorted(out.values(), key=lambda a: a.start)


@dataclass(frozen=True, slots=True)
class _Stmt:
    test_id: str
    fixture: _Span | None
    sql: str
    params: str
    vxid: str | None
    timestamp: float


def _place(events: Sequence[ServerEvent], runs: Sequence[_Attempt]) -> list[_Stmt]:
    """Each logged statement with the attempt and (innermost) fixture that was running; a doctor run is
    serial, so the one live attempt on that database is the one."""
    out: list[_Stmt] = []
    owner_of = _owner_finder(runs)
    for event in events:
        sql = statement_of(event)
        if sql is None:
            continue
        owner = owner_of(event)
        if owner is None:
            continue
        fixture = _fixture_at(owner.spans, event.timestamp)
        out.append(_Stmt(owner.test_id, fixture, sql, event.detail or "", event.vxid, event.timestamp))
    return out


CLOSE_LAG_S = 0.25  # a disconnection is logged when the backend exits, a moment after the client closed
SPAN_SLACK_S = 0.002  # the server's log timestamps have millisecond resolution


def _fixture_at(spans: Sequence[_Span], at: float) -> _Span | None:
    """The innermost fixture running at `at`: one whose span holds it, else one within the log's
    millisecond resolution (fixture spans follow each other with no gap: a wide slack picks the next)."""
    for slack in (0.0, SPAN_SLACK_S):
        live = [s for s in spans if s.start - slack <= at <= s.end + slack]
        if live:
            return max(live, key=lambda s: s.start)
    return None


def _owner_finder(runs: Sequence[_Attempt]) -> Callable[[ServerEvent], _Attempt | None]:
    """`_owner` over only the attempts that can hold the event's time (runs are sorted by start):
    a bisect instead of a scan of every attempt per event."""
    starts = [a.start for a in runs]
    longest = max((a.end - a.start for a in runs), default=0.0)

    def owner_of(event: ServerEvent) -> _Attempt | None:
        at = event.timestamp
        lo = bisect.bisect_left(starts, at - longest - SLACK_S)
        return _owner(runs[lo : bisect.bisect_right(starts, at + SLACK_S)], event)

    return owner_of


def _owner(runs: Sequence[_Attempt], event: ServerEvent) -> _Attempt | None:
    """The attempt running on the event's database at its time: inside a window first, then within the
    slack (a serial run's windows touch: one ends, the next begins a millisecond later)."""
    mine = [a for a in runs if _same_database(a.database, a.worker, event.database)]
    at = event.timestamp
    inside = [a for a in mine if a.start <= at <= a.end]
    if len(inside) == 1:
        return inside[0]
    near = [a for a in mine if a.start - SLACK_S <= at <= a.end + SLACK_S]
    if not near or inside:
        return None
    return min(near, key=lambda a: min(abs(at - a.start), abs(at - a.end)))


def diagnose(
    occurrences: Sequence[Occurrence],
    events: Sequence[ServerEvent],
    max_connections: int | None = None,
    workers: int | None = None,
) -> tuple[DoctorFinding, ...] | None:
    """The findings of a doctor run; None when the results hold no fixture spans (not a doctor run).
    `max_connections`/`workers` (the run's manifest) enable the headroom check."""
    runs = attempts(occurrences)
    if not runs:
        return None
    stmts = _place(events, runs)
    findings = [
        *_ddl_per_test(stmts),
        *_schema_teardown(stmts),
        *_fixed_keys(stmts),
        *_connections_left_open(events, runs),
        *_connection_headroom(events, runs, max_connections, workers),
    ]
    return tuple(f for f in findings if f is not None)


def _finding(
    key: str, evidence: list[str], tests: Iterable[str], fixtures: Iterable[_Span | None]
) -> DoctorFinding:
    ids = sorted(set(tests))
    named = [f for f in fixtures if f is not None]
    counts: dict[str, int] = {}
    for span in named:
        counts[span.label] = counts.get(span.label, 0) + 1
    fixture = max(counts, key=lambda k: counts[k]) if counts else None
    title, fix = FIXES[key]
    return DoctorFinding(key, title, fix, tuple(evidence), len(ids), tuple(ids[:SHOWN_TESTS]), fixture)


def _per_test(stmts: Iterable[_Stmt]) -> dict[str, list[_Stmt]]:
    out: dict[str, list[_Stmt]] = {}
    for stmt in stmts:
        out.setdefault(stmt.test_id, []).append(stmt)
    return out


def _ddl_per_test(stmts: Sequence[_Stmt]) -> list[DoctorFinding]:
    by_key: dict[str, list[_Stmt]] = {}
    for stmt in stmts:
        match = _DDL.match(stmt.sql)
        if match and match.group(1).upper().startswith("CREATE") and not _in_session_fixture(stmt):
            verb = " ".join(match.group(1).upper().split())
            by_key.setdefault(f"{verb} {match.group(2).upper()} {_bare(match.group(3))}", []).append(stmt)
    repeated = {k: v for k, v in by_key.items() if len({s.test_id for s in v}) > 1}
    if not repeated:
        return []
    evidence = [
        f"{key}: run in {len({s.test_id for s in rows})} tests"
        for key, rows in sorted(repeated.items(), key=lambda kv: (-len({s.test_id for s in kv[1]}), kv[0]))
    ]
    rows = [s for v in repeated.values() for s in v]
    return [_finding("ddl-per-test", evidence, (s.test_id for s in rows), (s.fixture for s in rows))]


def _schema_teardown(stmts: Sequence[_Stmt]) -> list[DoctorFinding]:
    drops = [
        s
        for s in stmts
        if (m := _DDL.match(s.sql)) and m.group(1).upper() == "DROP" and m.group(2).upper() == "TABLE"
    ]
    per_table: dict[str, set[str]] = {}
    for stmt in drops:
        per_table.setdefault(_bare(_DDL.match(stmt.sql).group(3)), set()).add(stmt.test_id)  # type: ignore[union-attr]
    repeated = {t: ids for t, ids in per_table.items() if len(ids) > 1}
    if not repeated:
        return []
    evidence = [
        f"DROP TABLE {t}: run in {len(ids)} tests"
        for t, ids in sorted(repeated.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]
    # Tables dropped together (one transaction: metadata.drop_all) and tables that reference them from
    # outside that set — the DROP that fails as soon as another worker has created the referencing table.
    together: dict[str | None, set[str]] = {}
    for stmt in drops:
        together.setdefault(stmt.vxid, set()).add(_bare(_DDL.match(stmt.sql).group(3)))  # type: ignore[union-attr]
    sets = [tables for vxid, tables in together.items() if vxid and len(tables) > 1]
    seen: set[tuple[str, str]] = set()
    for stmt in stmts:
        match = _DDL.match(stmt.sql)
        if not match or not match.group(1).upper().startswith("CREATE") or match.group(2).upper() != "TABLE":
            continue
        table = _bare(match.group(3))
        for target in {_bare(r) for r in _REFERENCES.findall(stmt.sql)}:
            outside = any(target in group and table not in group for group in sets)
            if outside and (table, target) not in seen:
                seen.add((table, target))
                evidence.append(
                    f"{table} references {target} but is not dropped with it: under xdist DROP TABLE {target} "
                    "fails (other objects depend on it)"
                )
    return [
        _finding("schema-teardown-per-test", evidence, (s.test_id for s in drops), (s.fixture for s in drops))
    ]


def _fixed_keys(stmts: Sequence[_Stmt]) -> list[DoctorFinding]:
    keys = _key_columns(stmts)
    seen: dict[tuple[str, tuple[str, ...], tuple[str, ...]], list[_Stmt]] = {}
    for stmt in stmts:
        match = _INSERT.match(stmt.sql)
        if not match:
            continue
        table = _bare(match.group(1))
        columns = [_bare(c) for c in match.group(2).split(",")]
        values = [v.strip() for v in match.group(3).split(",")]
        params = {n: v for n, v in _PARAM.findall(stmt.params)}
        row: dict[str, str] = {}
        for column, value in zip(columns, values, strict=False):
            if re.fullmatch(r"\$\d+", value) and value[1:] in params:
                row[column] = params[value[1:]]
            elif re.fullmatch(r"'(?:[^']|'')*'|-?\d+", value):
                row[column] = value
        for cols in keys.get(table, ()):
            if all(c in row and row[c] != "NULL" for c in cols):
                seen.setdefault((table, cols, tuple(row[c] for c in cols)), []).append(stmt)
    shared = {k: v for k, v in seen.items() if len({s.test_id for s in v}) > 1}
    if not shared:
        return []
    ranked = sorted(shared.items(), key=lambda kv: (-len({s.test_id for s in kv[1]}), kv[0]))
    evidence = [
        f"{table} ({', '.join(cols)}) = ({', '.join(v[:60] for v in values)}): inserted by {len({s.test_id for s in rows})} tests"
        for (table, cols, values), rows in ranked[:8]
    ]
    if len(ranked) > 8:
        evidence.append(f"… and {len(ranked) - 8} more shared keys")
    rows = [s for v in shared.values() for s in v]
    return [_finding("fixed-keys", evidence, (s.test_id for s in rows), (s.fixture for s in rows))]


def _key_columns(stmts: Iterable[_Stmt]) -> dict[str, set[tuple[str, ...]]]:
    """Primary-key and unique column sets per table, from the CREATE TABLE statements in the log."""
    out: dict[str, set[tuple[str, ...]]] = {}
    for stmt in stmts:
        match = _DDL.match(stmt.sql)
        if not match or not match.group(1).upper().startswith("CREATE") or match.group(2).upper() != "TABLE":
            continue
        table = _bare(match.group(3))
        body = stmt.sql[stmt.sql.find("(") + 1 : stmt.sql.rfind(")")]
        for _kind, cols in _KEY_CONSTRAINT.findall(body):
            out.setdefault(table, set()).add(tuple(_bare(c) for c in cols.split(",")))
        for part in _top_level(body):
            words = part.split()
            if len(words) > 1 and words[0].upper() not in (
                "PRIMARY",
                "UNIQUE",
                "CONSTRAINT",
                "FOREIGN",
                "CHECK",
            ):
                generated = any(w.lower() in ("serial", "bigserial", "smallserial") for w in words[1:2])
                if (
                    re.search(r"\b(PRIMARY\s+KEY|UNIQUE)\b", part, re.I)
                    and not generated
                    and "DEFAULT" not in part.upper()
                ):
                    out.setdefault(table, set()).add((_bare(words[0]),))
    return out


def _top_level(body: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in body:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _connections_left_open(events: Sequence[ServerEvent], runs: Sequence[_Attempt]) -> list[DoctorFinding]:
    opened: dict[int, ServerEvent] = {}
    closed: dict[int, float] = {}
    for event in events:
        if event.pid is None:
            continue
        if event.message.startswith("connection authorized"):
            opened.setdefault(event.pid, event)
        elif event.message.startswith("disconnection"):
            closed[event.pid] = event.timestamp
    leaked: list[tuple[str, _Span | None]] = []
    owner_of = _owner_finder(runs)
    following = {id(a): b for a, b in itertools.pairwise(runs)}
    for pid, event in opened.items():
        at = event.timestamp
        owner = owner_of(event)
        if owner is None:
            continue
        spans = [s for s in owner.spans if s.start - SPAN_SLACK_S <= at <= s.end + SPAN_SLACK_S]
        fixture = _fixture_at(owner.spans, at)
        if any(s.scope != "function" for s in spans):
            continue  # a session/module fixture's connection is meant to outlive the test
        # Still open once the *next* test is over (or, after the last test, a while later): not a close
        # that the server logged a little late, but a connection nobody closed.
        end = closed.get(pid)
        after = following.get(id(owner))
        deadline = max(owner.end + CLOSE_LAG_S, after.end if after is not None else 0.0)
        if end is None or end > deadline:
            leaked.append((owner.test_id, fixture))
    if not leaked:
        return []
    tests = {t for t, _ in leaked}
    evidence = [
        f"{len(leaked)} connections opened in {len(tests)} tests were still open after their teardown"
    ]
    return [_finding("connections-left-open", evidence, tests, (f for _, f in leaked))]


RESERVED_CONNECTIONS = 3  # superuser_reserved_connections' default: slots the suite's role cannot use


def _connection_headroom(
    events: Sequence[ServerEvent], runs: Sequence[_Attempt], max_connections: int | None, workers: int | None
) -> list[DoctorFinding]:
    """Peak connections the suite held at once (opened during a test, session fixtures' included: they
    count per worker too) × workers, against max_connections less the reserve."""
    if not max_connections or not workers or not runs:
        return []
    owner_of = _owner_finder(runs)
    ours: set[int] = set()
    open_now, peak, peak_test = 0, 0, ""
    for event in sorted((e for e in events if e.pid is not None), key=lambda e: e.timestamp):
        if event.message.startswith("connection authorized"):
            owner = owner_of(event)
            if owner is None or event.pid in ours:
                continue
            ours.add(event.pid)  # type: ignore[arg-type]  # filtered above
            open_now += 1
            if open_now > peak:
                peak, peak_test = open_now, owner.test_id
        elif event.message.startswith("disconnection") and event.pid in ours:
            ours.discard(event.pid)  # type: ignore[arg-type]
            open_now -= 1
    usable = max_connections - RESERVED_CONNECTIONS
    if peak * workers <= usable:
        return []
    evidence = [
        f"a serial run held up to {peak} connections at once (during {peak_test}); {workers} workers would "
        f"hold {peak * workers}, and max_connections {max_connections} leaves {usable} for the suite"
    ]
    return [_finding("connection-headroom", evidence, [peak_test], ())]


def _in_session_fixture(stmt: _Stmt) -> bool:
    return stmt.fixture is not None and stmt.fixture.scope != "function"


def _bare(name: str) -> str:
    return name.rsplit(".", 1)[-1].strip('"').lower()
