"""The server's side of a failure: what PostgreSQL logged, and which test it belongs to.

A driver exception carries one line; the server log carries the statement, DETAIL/HINT/CONTEXT, both
processes of a deadlock and who held a lock. The launcher writes that log as jsonlog (csvlog before
PostgreSQL 15); this module parses its text and attributes each record to the test that was running —
by application name when the suite sets one, else by database and time window, disambiguated by the
test's own error message so that two xdist workers sharing a database are never cross-attributed.
Pure: the command edge reads the file and passes its text.
"""

from __future__ import annotations

import bisect
import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from db_test_action.contract import TOOL_APP
from db_test_action.model import ParseProblem, ServerRecord

# csvlog columns, PostgreSQL 13+ (14 adds leader_pid and query_id at the end).
CSV_COLUMNS = (
    "timestamp user dbname pid connection_from session_id line_num ps session_start vxid txid "
    "error_severity state_code message detail hint internal_query internal_position context statement "
    "cursor_position location application_name backend_type leader_pid query_id"
).split()
ERROR_SEVERITIES = frozenset({"ERROR", "FATAL", "PANIC"})


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One server log record, reduced to what explains a test failure."""

    timestamp: float  # epoch seconds, UTC
    severity: str
    message: str
    sqlstate: str | None = None
    detail: str | None = None
    hint: str | None = None
    context: str | None = None
    statement: str | None = None
    database: str | None = None
    application_name: str | None = None
    pid: int | None = None
    backend_type: str | None = None
    vxid: str | None = None  # the virtual transaction: statements run together (one drop_all)

    @property
    def is_error(self) -> bool:
        return self.severity in ERROR_SEVERITIES

    @property
    def is_lock_wait(self) -> bool:
        return self.severity == "LOG" and (
            "still waiting for" in self.message or ("acquired" in self.message and "after" in self.message)
        )

    def lines(self) -> tuple[str, ...]:
        """The record as psql would print it: `ERROR:  …`, `DETAIL:  …`, …, `STATEMENT:  …`."""
        code = f" ({self.sqlstate})" if self.sqlstate and self.sqlstate != "00000" else ""
        out = [f"{self.severity}{code}:  {self.message}"]
        for label, value in (
            ("DETAIL", self.detail),
            ("HINT", self.hint),
            ("CONTEXT", self.context),
            ("STATEMENT", self.statement),
        ):
            if value:
                first, *rest = value.strip().splitlines()
                out.append(f"{label}:  {first}")
                out.extend(f"    {line}" for line in rest)
        return tuple(out)


def _parse_time(value: str) -> float:
    # "2026-11-25 17:56:45.748 UTC": the launcher sets log_timezone=UTC.
    if len(value) > 40:
        raise ValueError(f"timestamp {value[:40]!r}… is too long")
    stamp = value.rsplit(" ", 1)[0] if value.endswith((" UTC", " GMT")) else value
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in stamp else "%Y-%m-%d %H:%M:%S"
    return datetime.strptime(stamp, fmt).replace(tzinfo=timezone.utc).timestamp()


def _event(rec: dict[str, str | int | None]) -> ServerEvent:
    def text(key: str) -> str | None:
        value = rec.get(key)
        return str(value).strip() or None if value is not None else None

    pid = rec.get("pid")
    if isinstance(pid, str) and pid.strip().isdigit() and len(pid.strip()) <= 10:
        pid = int(pid)
    return ServerEvent(
        timestamp=_parse_time(str(rec["timestamp"])),
        severity=str(rec.get("error_severity") or "LOG"),
        message=str(rec.get("message") or ""),
        sqlstate=text("state_code"),
        detail=text("detail"),
        hint=text("hint"),
        context=text("context"),
        statement=text("statement"),
        database=text("dbname"),
        application_name=text("application_name"),
        pid=pid if type(pid) is int and 0 < pid < 1 << 31 else None,  # never trusted to be a number
        backend_type=text("backend_type"),
        vxid=text("vxid"),
    )


# What a hostile record can raise: wrong types, huge or non-finite numbers, absurd nesting.
BAD_RECORD = (ValueError, KeyError, TypeError, OverflowError, RecursionError)


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "…"


def parse_server_log(raw: str, name: str) -> tuple[tuple[ServerEvent, ...], tuple[ParseProblem, ...]]:
    """A jsonlog (one object a line) or csvlog text, from the file `name`; bad records become ParseProblems."""
    events: list[ServerEvent] = []
    problems: list[ParseProblem] = []
    if raw[:4096].lstrip().startswith("{"):
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(f"a JSON {type(record).__name__}, not an object")
                events.append(_event(record))
            except BAD_RECORD as exc:
                problems.append(ParseProblem(name, f"bad jsonlog record ({_why(exc)})", number))
    else:
        # A statement may be longer than csv's default 128 KiB field limit; the launcher caps the whole
        # log at 64 MiB, so that is the bound (a larger field is one bad record, not a crash).
        csv.field_size_limit(max(csv.field_size_limit(), 64 << 20))
        rows = csv.reader(raw.splitlines(keepends=True))
        number = 0
        while True:
            number += 1
            try:
                row = next(rows)
                if row:
                    events.append(_event(dict(zip(CSV_COLUMNS, row, strict=False))))
            except StopIteration:
                break
            except (*BAD_RECORD, csv.Error) as exc:
                problems.append(ParseProblem(name, f"bad csvlog record ({_why(exc)})", number))
    if len(problems) > 5:  # one line per file is enough to say it is damaged
        problems = [*problems[:5], ParseProblem(name, f"and {len(problems) - 5} more bad records")]
    return tuple(events), tuple(problems)


@dataclass(frozen=True, slots=True)
class TestWindow:
    """One execution of one test, as the plugin recorded it (start/end from JUnit properties)."""

    __test__ = False  # not a pytest test class, despite the name

    test_id: str
    start: float
    end: float
    database: str | None = None
    worker: str | None = None
    messages: tuple[str, ...] = ()  # the test's failure/error messages: the tie-breaker


@dataclass(frozen=True, slots=True)
class Attribution:
    evidence: tuple[tuple[str, tuple[ServerEvent, ...]], ...]  # test id → its records, in time order
    unattributed: tuple[ServerEvent, ...]  # server errors no test can be tied to (e.g. session teardown)
    in_no_window: tuple[ServerEvent, ...] = ()  # those of them outside every test's window (and database)

    def for_test(self, test_id: str) -> tuple[ServerEvent, ...]:
        return dict(self.evidence).get(test_id, ())


def _is_relevant(event: ServerEvent) -> bool:
    return (event.is_error or event.is_lock_wait) and event.backend_type in (None, "client backend")


def _app_matches(app: str | None, test_id: str) -> bool:
    # application_name is cut at 63 bytes; a suite may prefix it with the worker id ("gw0 tests/…").
    if not app:
        return False
    tail = app.split(" ", 1)[-1]
    is_cut = len(app.encode()) >= 60  # the server kept only the first 63 bytes
    return bool(tail) and (test_id == tail or (is_cut and len(tail) >= 8 and test_id.startswith(tail)))


def attribute_events(
    events: Iterable[ServerEvent], windows: Sequence[TestWindow], slack_s: float = 0.05
) -> Attribution:
    """Tie server records to test executions; ambiguous records are left unattributed, never guessed."""
    ordered = sorted(windows, key=lambda w: w.start)
    databases = {(w.database, w.worker) for w in ordered}
    workers_of: dict[str | None, int] = {}  # event database -> how many workers' tests could have used it
    starts = [w.start for w in ordered]
    longest = max((w.end - w.start for w in ordered), default=0.0)
    found: dict[str, list[ServerEvent]] = {}
    seen: dict[str, set[tuple[str | None, str, str | None, str | None]]] = {}
    orphans: list[ServerEvent] = []
    outside: list[ServerEvent] = []
    for event in sorted(events, key=lambda e: e.timestamp):
        if not _is_relevant(event):
            continue
        lo = bisect.bisect_left(starts, event.timestamp - longest - slack_s)
        hi = bisect.bisect_right(starts, event.timestamp + slack_s)
        live = [
            w
            for w in ordered[lo:hi]
            if w.start - slack_s <= event.timestamp <= w.end + slack_s
            and _same_database(w.database, w.worker, event.database)
        ]
        if event.database not in workers_of:
            workers_of[event.database] = len(
                {worker for db, worker in databases if _same_database(db, worker, event.database)}
            )
        shared = workers_of[event.database] > 1
        chosen = _choose(event, live, shared)
        if chosen is None:
            if event.is_error:
                orphans.append(event)
                if not live:
                    outside.append(event)
            continue
        key = (event.sqlstate, event.message, event.detail, event.statement)
        if key not in seen.setdefault(chosen, set()):
            seen[chosen].add(key)
            found.setdefault(chosen, []).append(event)
    return Attribution(tuple((k, tuple(v)) for k, v in found.items()), tuple(orphans), tuple(outside))


def _same_database(window_db: str | None, worker: str | None, event_db: str | None) -> bool:
    """The test's DATABASE_URL database, or one the suite derived from it for its worker (`<db>_gw1`,
    as suites that give each xdist worker its own database in conftest name them)."""
    if window_db is None or event_db is None or window_db == event_db:
        return True
    return event_db.startswith(window_db + "_") and (worker is None or event_db.endswith("_" + worker))


def _choose(event: ServerEvent, live: list[TestWindow], shared: bool) -> str | None:
    """`shared`: several workers used this database, so a lone live window proves nothing — the other
    worker may have been in a fixture outside any test window."""
    by_app = {w.test_id for w in live if _app_matches(event.application_name, w.test_id)}
    if len(by_app) == 1:
        return by_app.pop()
    ids = {w.test_id for w in live}
    if len(ids) == 1 and not shared:
        return ids.pop()
    if not ids:
        return None
    # Several tests ran then (xdist on one database): only the one whose error names this record.
    needle = event.message.strip().lower()
    named = {w.test_id for w in live if needle and any(needle in m.lower() for m in w.messages)}
    return named.pop() if len(named) == 1 else None


# --- for the report: records trimmed to what a comment can hold -----------------------------------------

# Lines kept per field: a deadlock's DETAIL names every process and its statement (2 processes: 4+ lines).
_FIELD_LINES = {"DETAIL": 12, "HINT": 3, "CONTEXT": 4, "STATEMENT": 6}
LINE_CHARS = 300


def to_record(event: ServerEvent, source: str) -> ServerRecord:
    """A ServerEvent as the report keeps it: psql-style lines, long fields cut (a statement can be 100 kB)."""
    out: list[str] = []
    label, kept = "", 0
    for line in event.lines():
        head = line.split(":", 1)[0]
        if head in _FIELD_LINES and line.startswith(head + ":  "):
            label, kept = head, 0
        elif not line.startswith("    "):
            label, kept = "", 0
        kept += 1
        limit = _FIELD_LINES.get(label)
        if limit is not None and kept > limit:
            if kept == limit + 1:
                out.append("    …")
            continue
        out.append(line if len(line) <= LINE_CHARS else line[: LINE_CHARS - 1] + "…")
    return ServerRecord(
        timestamp=round(event.timestamp, 6),
        severity=event.severity,
        message=event.message[:LINE_CHARS],
        lines=tuple(out),
        sqlstate=event.sqlstate,
        database=event.database,
        pid=event.pid,
        source=source,
    )


SERVER_DATABASES = frozenset({"postgres", "template0", "template1"})


def foreign_databases(events: Iterable[ServerEvent], windows: Sequence[TestWindow]) -> tuple[str, ...]:
    """Databases client backends used that are neither a test's own (its DATABASE_URL, as the plugin
    recorded it) nor derived from one (`<db>_gw0`, a sibling `<db-prefix>_template`), nor the server's own."""
    own = {w.database for w in windows if w.database}
    if not own:
        return ()  # no window says which database the tests had: nothing to compare with
    stems = {db.rsplit("_", 1)[0] for db in own}
    found: set[str] = set()
    for event in events:
        db = event.database
        if (
            not db
            or db in own
            or db in SERVER_DATABASES
            or event.backend_type not in (None, "client backend")
        ):
            continue
        # The runner's own connections (creating, preparing, dropping databases); the connection line
        # carries the name in its message only, the record's field is set after it is logged.
        if event.application_name == TOOL_APP or event.message.endswith(f"application_name={TOOL_APP}"):
            continue
        if (
            any(db.startswith(o + "_") or o.startswith(db + "_") for o in own)
            or db.rsplit("_", 1)[0] in stems
        ):
            continue
        found.add(db)
    return tuple(sorted(found))
