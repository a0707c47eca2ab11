"""Preparing a server for a suite: the extensions (in template1 when we own the server) and the database.

Shared by the launcher (our own server) and external mode (`--database-url`, e.g. a services: container).
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql

from db_test_action.errors import EXIT_ENV, DbTestActionError
from db_test_action.server.binaries import package_for_extension
from db_test_action.server.info import ServerInfo, parse_url, redact


def prepare_databases(
    info: ServerInfo, extensions: Sequence[str], *, major: int | None, in_template: bool
) -> None:
    """Create the extensions (in template1 when we own the server) and the target database."""
    try:
        with psycopg.connect(info.url("postgres"), autocommit=True, connect_timeout=10) as conn:
            _check_available(conn, info, extensions, major)
            if in_template:
                # Every database created later (per run, per xdist worker) inherits the extensions.
                with psycopg.connect(info.url("template1"), autocommit=True, connect_timeout=10) as tpl:
                    _create_extensions(tpl, extensions)
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (info.database,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(info.database)))
        with psycopg.connect(info.url(), autocommit=True, connect_timeout=10) as conn:
            _create_extensions(conn, extensions)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DbTestActionError(
            f"{redact(info.url())}: {first}; check the server and the user's rights", EXIT_ENV
        ) from None


def _check_available(
    conn: psycopg.Connection, info: ServerInfo, extensions: Sequence[str], major: int | None
) -> None:
    rows = conn.execute("SELECT name FROM pg_available_extensions WHERE name = ANY(%s)", (list(extensions),))
    available = {row[0] for row in rows}
    missing = [name for name in extensions if name not in available]
    if missing:
        if major is None:
            major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000  # type: ignore[index]
        packages = ", ".join(sorted({package_for_extension(name, major) for name in missing}))
        raise DbTestActionError(
            f"extensions: {', '.join(missing)} not available on {info.host}:{info.port} "
            f"(PostgreSQL {major}); install {packages} on the server",
            EXIT_ENV,
        )


def _create_extensions(conn: psycopg.Connection, extensions: Sequence[str]) -> None:
    for name in extensions:
        conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name)))


def use_external(url: str, extensions: Sequence[str]) -> ServerInfo:
    """External mode: check an existing server answers, install the extensions, and describe it."""
    info = parse_url(url)
    try:
        with psycopg.connect(info.url(), autocommit=True, connect_timeout=5) as conn:
            is_super = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    except psycopg.OperationalError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DbTestActionError(
            f"--database-url {redact(url)}: cannot connect ({first}); check the URL and that the server is up",
            EXIT_ENV,
        ) from None
    # Only a superuser may touch template1; otherwise the extensions live in the target database only.
    prepare_databases(info, extensions, major=None, in_template=bool(is_super and is_super[0]))
    return info
