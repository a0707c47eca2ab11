"""At a time limit: what every backend of the run was doing, read from the server before pytest is stopped.

Why before: once pytest is interrupted, the waiting statement is cancelled and the transaction that held
the lock rolls back, so afterwards nothing is left to see. The snapshot is one query over
`pg_stat_activity` (state, statement, `xact_start`, `state_change`, wait event, `application_name` —
which the plugin sets to `<worker> <node id>` for libpq drivers) with `pg_blocking_pids()` for who waits
on whom and the ungranted `pg_locks` rows for what on. Relation names are resolved in each database
(a regclass cast only works inside the database that owns the relation).

The snapshots go to `shard-I-run-K.hang.json` beside the JUnit file (a JSON list, rewritten whole on
each snapshot); `db-test-action report` attributes them to tests (report/hangs.py).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from db_test_action.contract import TOOL_APP
from db_test_action.errors import first_line
from db_test_action.server.launch import ServerInfo

SNAPSHOT_VERSION = 1
_STATEMENT_LIMIT = 2000

_ACTIVITY_SQL = """
SELECT a.pid, a.datname, a.usename, a.application_name, a.state, a.wait_event_type, a.wait_event,
       left(a.query, %(limit)s) AS query,
       extract(epoch FROM a.backend_start)::float8 AS backend_start,
       extract(epoch FROM a.xact_start)::float8 AS xact_start,
       extract(epoch FROM a.query_start)::float8 AS query_start,
       extract(epoch FROM a.state_change)::float8 AS state_change,
       pg_blocking_pids(a.pid) AS blocked_by,
       coalesce((SELECT json_agg(json_build_object(
                   'locktype', l.locktype, 'mode', l.mode, 'relation', l.relation,
                   'page', l.page, 'tuple', l.tuple, 'transactionid', l.transactionid::text))
                 FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted), '[]'::json) AS waiting_for,
       (SELECT array_agg(DISTINCT l.relation) FROM pg_locks l
         WHERE l.pid = a.pid AND l.granted AND l.relation IS NOT NULL
           AND l.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock',
                          'AccessExclusiveLock', 'RowShareLock')) AS holding
FROM pg_stat_activity a
WHERE a.pid <> pg_backend_pid()
  AND a.backend_type = 'client backend'
  AND (a.datname = %(db)s OR a.datname LIKE %(derived)s)
ORDER BY a.pid
"""


def take_snapshot(
    info: ServerInfo, admin_db: str, database: str, *, reason: str, limit_s: float, test: str | None = None
) -> dict[str, Any]:
    """Every client backend on the run's database (and the per-worker ones derived from it: `<db>_gw0`).

    Never raises: a server that cannot be asked gives a snapshot with `error` set, so the report can say
    why it has nothing to show rather than losing the run's results over it.
    """
    taken = time.time()
    snapshot: dict[str, Any] = {
        "version": SNAPSHOT_VERSION,
        "reason": reason,
        "limit_s": limit_s,
        "test": test,
        "taken_at": taken,
        "database": database,
        "backends": [],
        "error": None,
    }
    import psycopg  # only at a time limit: `run` itself needs no driver (server/psql.py)

    derived = database.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + "\\_%"
    try:
        with psycopg.connect(
            info.url(admin_db), autocommit=True, connect_timeout=10, application_name=TOOL_APP
        ) as conn:
            conn.execute("SET statement_timeout = '10s'")
            cur = conn.execute(_ACTIVITY_SQL, {"limit": _STATEMENT_LIMIT, "db": database, "derived": derived})
            columns = [c.name for c in cur.description or ()]
            backends = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
    except psycopg.Error as exc:
        snapshot["error"] = first_line(exc)
        return snapshot
    _name_relations(info, backends)
    snapshot["backends"] = backends
    return snapshot


def _name_relations(info: ServerInfo, backends: list[dict[str, Any]]) -> None:
    """Replace relation OIDs by `schema.table` names, asking each database about its own OIDs."""
    by_db: dict[str, set[int]] = {}
    for b in backends:
        oids = {w["relation"] for w in b["waiting_for"] if w.get("relation")} | set(b["holding"] or ())
        if oids and b["datname"]:
            by_db.setdefault(b["datname"], set()).update(oids)
    import psycopg

    names: dict[tuple[str, int], str] = {}
    for db, oids in by_db.items():
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(
                info.url(db), autocommit=True, connect_timeout=5, application_name=TOOL_APP
            ) as conn,
        ):
            conn.execute("SET statement_timeout = '5s'")
            rows = conn.execute(
                "SELECT c.oid::int8, c.oid::regclass::text FROM pg_class c WHERE c.oid = ANY(%s::oid[])",
                (sorted(oids),),
            ).fetchall()
            names.update({(db, int(oid)): name for oid, name in rows})
    for b in backends:
        db = b["datname"]
        for w in b["waiting_for"]:
            if w.get("relation"):
                w["relation"] = names.get((db, int(w["relation"])), str(w["relation"]))
        held = (names.get((db, int(o)), str(o)) for o in (b["holding"] or ()))
        b["holding"] = sorted({name for name in held if not name.startswith(("pg_", "information_schema."))})


def append_snapshot(path: Path, snapshot: dict[str, Any]) -> None:
    """The file holds a JSON list; rewritten whole (a handful of snapshots per run at most)."""
    existing: list[Any] = []
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads(path.read_text(encoding="utf-8"))
        existing = loaded if isinstance(loaded, list) else []
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([*existing, snapshot], default=str, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
