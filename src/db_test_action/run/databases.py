"""The per-run databases on one server (ours or an external one): inspect what may be cloned, create, drop.

Apart from the runner because it is the only part that talks SQL to the server, and the runner's
orchestration must stay readable. The statements go through `psql` when the machine has it (no driver
import: ~0.3 s of `run`'s own work on a fresh runner), else through psycopg (server/psql.py).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from db_test_action.errors import EXIT_ENV, DbTestActionError
from db_test_action.server.info import ServerInfo, redact
from db_test_action.server.psql import PsqlError, find_psql, run_psql, run_with_driver

_INSPECT = (
    "SELECT rolsuper::int, rolcreatedb::int, current_setting('server_version_num')::int "
    "FROM pg_roles WHERE rolname = current_user;\n"
)
_CREATE = 'CREATE DATABASE :"name" TEMPLATE :"template";\n'
_DROP = 'DROP DATABASE IF EXISTS :"name" WITH (FORCE);\n'
_DROP_BEFORE_13 = (  # no WITH (FORCE) before PostgreSQL 13: end the sessions first
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :'name';\n"
    'DROP DATABASE IF EXISTS :"name";\n'
)
_FIND = Path("find")  # the default of `psql`: look for one


def database_name(shard: int, run: int) -> str:
    """Unique per invocation (two jobs may share an external server), lower-case, well under 63 bytes."""
    return f"dta_s{shard}_r{run}_{secrets.token_hex(4)}"


class Databases:
    """Creates and drops the per-run databases on one server (ours or an external one)."""

    def __init__(self, info: ServerInfo, *, owns_server: bool, psql: Path | None = _FIND) -> None:
        self.info = info
        self.psql = find_psql() if psql is _FIND else psql  # None: through the driver
        self.admin_db, self.template, self.major = self._inspect(owns_server)

    def _sql(self, database: str, script: str, **variables: str) -> list[list[str]]:
        if self.psql is not None:
            return run_psql(self.psql, self.info, database, script, variables)
        return run_with_driver(self.info, database, script, variables)

    def _inspect(self, owns_server: bool) -> tuple[str, str, int]:
        if owns_server:
            return "postgres", "template1", self.info.version or 13  # we put the extensions in template1
        for admin in ("postgres", "template1", self.info.database):
            try:
                rows = self._sql(admin, _INSPECT)
            except PsqlError as exc:
                if exc.connect:
                    continue
                raise DbTestActionError(
                    f"--database-url {redact(self.info.url())}: {exc.first}; check the server and the user's rights",
                    EXIT_ENV,
                ) from None
            is_super, may_create, version = (int(v) for v in rows[0])
            if not (is_super or may_create):
                raise DbTestActionError(
                    f"--database-url {redact(self.info.url())}: user {self.info.user!r} may not create "
                    "databases; grant CREATEDB (one fresh database per run needs it)",
                    EXIT_ENV,
                )
            if admin == self.info.database and not is_super:
                raise DbTestActionError(
                    f"--database-url {redact(self.info.url())}: cannot reach the postgres or template1 "
                    f"database to clone {self.info.database!r} from outside it; allow connecting to postgres",
                    EXIT_ENV,
                )
            # A superuser got the extensions in template1 (use_external); otherwise they live in the
            # target database only, so clone that (CREATE DATABASE … TEMPLATE needs it idle).
            return admin, ("template1" if is_super else self.info.database), version // 10000
        raise DbTestActionError(
            f"--database-url {redact(self.info.url())}: cannot connect; check the URL and that the server is up",
            EXIT_ENV,
        )

    def create(self, name: str) -> str:
        try:
            self._sql(self.admin_db, _CREATE, name=name, template=self.template)
        except PsqlError as exc:
            fix = (
                f"close other sessions on {self.template!r} (a database used as a template must be idle)"
                if "being accessed by other users" in exc.first
                else "check the server and the user's rights"
            )
            raise DbTestActionError(f"create database {name}: {exc.first}; {fix}", EXIT_ENV) from None
        return self.info.url(name)

    def drop(self, name: str) -> str | None:
        """Drop a run's database; a failure is returned (and reported), never raised over the outcome."""
        try:
            self._sql(self.admin_db, _DROP if self.major >= 13 else _DROP_BEFORE_13, name=name)
        except PsqlError as exc:
            return exc.first
        return None
