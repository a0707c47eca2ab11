"""`db_reset`: put a worker's database back to the template's state between tests, fast.

Why TRUNCATE by default: one `TRUNCATE a, b, … RESTART IDENTITY CASCADE` is a few milliseconds
whatever the row counts, while `drop_all`/`create_all` re-creates every table and index. TRUNCATE
alone would also wipe what the setup inserted (alembic_version, reference rows), so the template
keeps a snapshot of those (`dbtemplate.snapshot_seed`) and the same round trip re-inserts them.
Re-cloning undoes schema changes too, but must close every connection to the database first.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql

from db_test_action.errors import DbTestActionError, first_line
from db_test_action.plugin.template import (
    SEED_SCHEMA,
    USER_TABLES_SQL,
    admin_conninfo,
    clone_database,
    connect,
    with_database,
)
from db_test_action.server.info import redact

LOCK_TIMEOUT_MS = 10_000  # a test still holding a transaction must not hang the suite
DELETE_MAX_BYTES = 1 << 20  # above this, a dirty table is truncated (DELETE leaves dead rows behind)

# Only tables holding rows are touched, and small ones with DELETE: TRUNCATE creates new files for
# the table and each index, and CASCADE drags in every table that references it, so on a typical
# test's handful of rows DELETE is several times faster. That needs foreign-key triggers off
# (`session_replication_role = replica`, superusers only, as on CI servers); otherwise, and for big
# tables, TRUNCATE … CASCADE. The table list is read from the catalog on every reset, inside the same
# statement, so tables the tests created are covered too. Sequences that moved go back to their
# start (setval never rewrites the sequence); the plan's setval calls then restore the template's.
TRUNCATE_ALL_SQL = f"""
DO $reset$
DECLARE
  t record;
  is_dirty boolean;
  is_replica boolean := current_setting('is_superuser') = 'on';
  truncate_list text[] := '{{}}';
  seq record;
BEGIN
  IF is_replica THEN
    PERFORM set_config('session_replication_role', 'replica', true);
  END IF;
  FOR t IN {USER_TABLES_SQL} LOOP
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM ' || t.name || ')' INTO is_dirty;
    IF is_dirty AND is_replica AND pg_relation_size(t.oid) < {DELETE_MAX_BYTES} THEN
      EXECUTE 'DELETE FROM ' || t.name;
    ELSIF is_dirty THEN
      truncate_list := truncate_list || t.name;
    END IF;
  END LOOP;
  IF cardinality(truncate_list) > 0 THEN
    EXECUTE 'TRUNCATE ' || array_to_string(truncate_list, ', ') || ' CASCADE';
  END IF;
  FOR seq IN
    SELECT format('%I.%I', schemaname, sequencename) AS name, start_value FROM pg_sequences
     WHERE last_value IS NOT NULL AND schemaname NOT IN ('pg_catalog', 'information_schema')
  LOOP
    PERFORM setval(seq.name, seq.start_value, false);
  END LOOP;
END
$reset$;
"""


def build_reset_sql(plan: Sequence[tuple[int | None, str, str | None, str | None, int | None]]) -> str:
    """The whole reset as one multi-statement string: one round trip, one implicit transaction.

    `plan` rows are (position, target, snapshot, columns, sequence value) from the seed schema. The
    replica role set in the DO block still holds for the re-inserts (no triggers, no FK checks);
    without it, the parents-first order keeps the foreign keys satisfied.
    """
    parts = [TRUNCATE_ALL_SQL]
    for _pos, target, snapshot, columns, _value in sorted(
        (r for r in plan if r[0] is not None), key=lambda r: r[0]
    ):
        parts.append(
            f"INSERT INTO {target} ({columns}) OVERRIDING SYSTEM VALUE SELECT {columns} FROM {snapshot};"
        )
    for pos, target, _snapshot, _columns, value in plan:
        if pos is None and value is not None:
            parts.append(f"SELECT setval({_literal(target)}, {int(value)}, true);")
    return "\n".join(parts)


def _literal(text: str) -> str:
    """A string literal (standard_conforming_strings is on since PostgreSQL 9.1)."""
    return "'" + text.replace("'", "''") + "'"


class Resetter:
    """One per worker process: a kept-open connection and the reset SQL built on first use."""

    def __init__(self, base_url: str, template: str, database: str) -> None:
        self.base_url = base_url
        self.template = template
        self.database = database
        self._conn: psycopg.Connection | None = None
        self._sql: str | None = None

    def _connection(self) -> tuple[psycopg.Connection, str]:
        if self._conn is None or self._conn.closed:
            target = with_database(self.base_url, self.database)
            try:
                self._conn = psycopg.connect(admin_conninfo(target), autocommit=True, connect_timeout=10)
            except psycopg.Error as exc:
                first = first_line(exc)
                raise DbTestActionError(
                    f"db_reset: cannot connect to {redact(target)} ({first}); check the server is still up"
                ) from None
            self._conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
            self._conn.execute("SET application_name = 'db-test-action reset'")
        if self._sql is None:
            has_plan = self._conn.execute("SELECT to_regclass(%s)", (f"{SEED_SCHEMA}.plan",)).fetchone()
            rows = []
            if has_plan and has_plan[0]:
                rows = self._conn.execute(
                    sql.SQL("SELECT pos, target, snapshot, columns, value FROM {}.plan").format(
                        sql.Identifier(SEED_SCHEMA)
                    )
                ).fetchall()
            self._sql = build_reset_sql(rows)
        return self._conn, self._sql

    def truncate(self) -> None:
        conn, statement = self._connection()
        try:
            conn.execute(statement)
        except psycopg.errors.LockNotAvailable:
            self._rollback()
            who = self._blockers()
            raise DbTestActionError(
                f"db_reset: {self.database} has tables locked by another connection ({who}); "
                "commit or close it before the test ends"
            ) from None
        except psycopg.Error as exc:
            self._rollback()
            first = first_line(exc)
            raise DbTestActionError(
                f"db_reset: {self.database}: {first}; use --db-reset-mode=clone if the schema defeats TRUNCATE"
            ) from None

    def reclone(self) -> None:
        self.close()
        clone_database(self.base_url, self.template, self.database)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _rollback(self) -> None:
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.execute("ROLLBACK")
            except psycopg.Error:
                self.close()

    def _blockers(self) -> str:
        with connect(self.base_url, self.database) as conn:
            row = conn.execute(
                "SELECT string_agg(format('pid %s %s', pid, state), ', ') FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND application_name <> 'db-test-action reset' AND state LIKE 'idle in transaction%'"
            ).fetchone()
        return (row and row[0]) or "another session"
