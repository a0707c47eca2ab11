"""The extensions and the target database on a server: through `psql` on a server we own, else psycopg.

Why two ways: on our own server `psql` (server/psql.py) over the data dir's unix socket (trust) does
the three steps in ~30 ms, while importing psycopg alone costs 0.15–0.3 s, a large share of a start
that is otherwise ~0.2 s (see server/initdb_cache.py). A server given by URL, or a bin directory
without psql, goes through psycopg as before.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from db_test_action.contract import TOOL_APP
from db_test_action.errors import EXIT_ENV, DbTestActionError
from db_test_action.server.binaries import package_for_extension
from db_test_action.server.info import ServerInfo, redact
from db_test_action.server.psql import PsqlError, run_psql

if TYPE_CHECKING:
    import psycopg


def prepare_owned(info: ServerInfo, extensions: Sequence[str], *, bin_dir: Path, socket_dir: Path) -> None:
    """`prepare_databases(…, in_template=True)` on a server we started (trust on its unix socket)."""
    psql = bin_dir / "psql"
    if not (psql.is_file() and os.access(psql, os.X_OK)):
        prepare_databases(info, extensions, major=info.version, in_template=True)
        return
    names = {f"e{i}": name for i, name in enumerate(extensions)}
    listed = ", ".join(f":'{v}'" for v in names)
    check = f"SELECT name FROM pg_available_extensions WHERE name IN ({listed});\n"
    create_db = (
        "SELECT format('CREATE DATABASE %I', :'db')"
        " WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \\gexec\n"
    )
    create_ext = "".join(f'CREATE EXTENSION IF NOT EXISTS :"{v}";\n' for v in names)

    def run(database: str, script: str) -> list[list[str]]:
        try:
            return run_psql(
                psql, info, database, script, {"db": info.database, **names}, host=str(socket_dir)
            )
        except PsqlError as exc:
            raise DbTestActionError(
                f"{redact(info.url(database))}: {exc.first}; check the server and the user's rights", EXIT_ENV
            ) from None

    available = {row[0] for row in run("postgres", check)} if names else set()
    _check_available(info, extensions, available, info.version)
    if create_ext:  # every database created later (per run, per xdist worker) inherits them
        run("template1", create_ext)
    run("postgres", create_db)
    if create_ext:  # the target may have existed before (`--database postgres`)
        run(info.database, create_ext)


def prepare_databases(
    info: ServerInfo, extensions: Sequence[str], *, major: int | None, in_template: bool
) -> None:
    """Create the extensions (in template1 when we own the server) and the target database."""
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(
            info.url("postgres"), autocommit=True, connect_timeout=10, application_name=TOOL_APP
        ) as conn:
            rows = conn.execute(
                "SELECT name FROM pg_available_extensions WHERE name = ANY(%s)", (list(extensions),)
            )
            available = {row[0] for row in rows}
            if major is None and set(extensions) - available:
                major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000  # type: ignore[index]
            _check_available(info, extensions, available, major)
            if in_template:
                # Every database created later (per run, per xdist worker) inherits the extensions.
                with psycopg.connect(
                    info.url("template1"), autocommit=True, connect_timeout=10, application_name=TOOL_APP
                ) as tpl:
                    _create_extensions(tpl, extensions)
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (info.database,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(info.database)))
        with psycopg.connect(
            info.url(), autocommit=True, connect_timeout=10, application_name=TOOL_APP
        ) as conn:
            _create_extensions(conn, extensions)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DbTestActionError(
            f"{redact(info.url())}: {first}; check the server and the user's rights", EXIT_ENV
        ) from None


def _check_available(
    info: ServerInfo, extensions: Sequence[str], available: set[str], major: int | None
) -> None:
    missing = [name for name in extensions if name not in available]
    if missing:
        packages = ", ".join(sorted({package_for_extension(name, major) for name in missing}))
        raise DbTestActionError(
            f"extensions: {', '.join(missing)} not available on {info.host}:{info.port} "
            f"(PostgreSQL {major}); install {packages} on the server",
            EXIT_ENV,
        )


def _create_extensions(conn: psycopg.Connection, extensions: Sequence[str]) -> None:
    from psycopg import sql

    for name in extensions:
        conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name)))
