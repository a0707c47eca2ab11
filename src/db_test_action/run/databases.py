"""The per-run databases on one server (ours or an external one): inspect what may be cloned, create, drop.

Apart from the runner because it is the only part that talks SQL to the server, and the runner's
orchestration must stay readable.
"""

from __future__ import annotations

import contextlib

import psycopg
from psycopg import sql

from db_test_action.contract import TOOL_APP
from db_test_action.errors import EXIT_ENV, DbTestActionError
from db_test_action.server.info import ServerInfo, redact


class Databases:
    """Creates and drops the per-run databases on one server (ours or an external one)."""

    def __init__(self, info: ServerInfo, *, owns_server: bool) -> None:
        self.info = info
        self.admin_db, self.template, self.major = self._inspect(owns_server)

    def _inspect(self, owns_server: bool) -> tuple[str, str, int]:
        if owns_server:
            return "postgres", "template1", self.info.version or 13  # we put the extensions in template1
        for admin in ("postgres", "template1", self.info.database):
            with contextlib.suppress(psycopg.OperationalError):
                with psycopg.connect(
                    self.info.url(admin), autocommit=True, connect_timeout=10, application_name=TOOL_APP
                ) as conn:
                    row = conn.execute(
                        "SELECT rolsuper, rolcreatedb, current_setting('server_version_num')::int "
                        "FROM pg_roles WHERE rolname = current_user"
                    ).fetchone()
                assert row is not None
                if not (row[0] or row[1]):
                    raise DbTestActionError(
                        f"--database-url {redact(self.info.url())}: user {self.info.user!r} may not create "
                        "databases; grant CREATEDB (one fresh database per run needs it)",
                        EXIT_ENV,
                    )
                if admin == self.info.database and not row[0]:
                    raise DbTestActionError(
                        f"--database-url {redact(self.info.url())}: cannot reach the postgres or template1 "
                        f"database to clone {self.info.database!r} from outside it; allow connecting to postgres",
                        EXIT_ENV,
                    )
                # A superuser got the extensions in template1 (use_external); otherwise they live in the
                # target database only, so clone that (CREATE DATABASE … TEMPLATE needs it idle).
                return admin, ("template1" if row[0] else self.info.database), row[2] // 10000
        raise DbTestActionError(
            f"--database-url {redact(self.info.url())}: cannot connect; check the URL and that the server is up",
            EXIT_ENV,
        )

    def create(self, name: str) -> str:
        stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(self.template)
        )
        try:
            with psycopg.connect(
                self.info.url(self.admin_db), autocommit=True, connect_timeout=10, application_name=TOOL_APP
            ) as conn:
                conn.execute(stmt)
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            fix = (
                f"close other sessions on {self.template!r} (a database used as a template must be idle)"
                if "being accessed by other users" in first
                else "check the server and the user's rights"
            )
            raise DbTestActionError(f"create database {name}: {first}; {fix}", EXIT_ENV) from None
        return self.info.url(name)

    def drop(self, name: str) -> str | None:
        """Drop a run's database; a failure is returned (and reported), never raised over the outcome."""
        force = sql.SQL(" WITH (FORCE)") if self.major >= 13 else sql.SQL("")
        stmt = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)) + force
        try:
            with psycopg.connect(
                self.info.url(self.admin_db), autocommit=True, connect_timeout=10, application_name=TOOL_APP
            ) as conn:
                if self.major < 13:
                    conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
                    )
                conn.execute(stmt)
        except psycopg.Error as exc:
            return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return None
