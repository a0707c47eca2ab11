"""The extensions and the target database on a server: through `psql` on a server we own, else psycopg.

Why two ways: on our own server `psql` (server/psql.py) over the data dir's unix socket (trust) does
the steps in ~30 ms, while importing psycopg alone costs 0.15–0.3 s, a large share of a start that is
otherwise ~0.2 s (see server/initdb_cache.py). A server given by URL, or a bin directory without psql,
runs the same scripts through psycopg.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

from db_test_action.errors import EXIT_ENV, DbTestActionError
from db_test_action.server.binaries import package_for_extension
from db_test_action.server.info import ServerInfo, redact
from db_test_action.server.psql import PsqlError, run_psql, run_with_driver

SqlRunner = Callable[[str, str, Mapping[str, str]], list[list[str]]]  # (database, script, variables)


def prepare_owned(info: ServerInfo, extensions: Sequence[str], *, bin_dir: Path, socket_dir: Path) -> None:
    """`prepare_databases(…, in_template=True)` on a server we started: through psql on its unix socket
    (trust) when the bin directory has psql."""
    psql = bin_dir / "psql"
    runner: SqlRunner | None = None
    if psql.is_file() and os.access(psql, os.X_OK):
        runner = partial(run_psql, psql, info, host=str(socket_dir))
    prepare_databases(info, extensions, major=info.version, in_template=True, runner=runner)


def prepare_databases(
    info: ServerInfo,
    extensions: Sequence[str],
    *,
    major: int | None,
    in_template: bool,
    runner: SqlRunner | None = None,
) -> None:
    """Create the extensions (in template1 when `in_template`: every database created later, per run and
    per xdist worker, inherits them) and the target database. `runner` runs the scripts (default: the
    driver, server/psql.py's `run_with_driver`)."""
    run_sql: SqlRunner = runner or partial(run_with_driver, info)
    names = {f"e{i}": name for i, name in enumerate(extensions)}
    variables = {"db": info.database, **names}

    def run(database: str, script: str) -> list[list[str]]:
        try:
            return run_sql(database, script, variables)
        except PsqlError as exc:
            raise DbTestActionError(
                f"{redact(info.url(database))}: {exc.first}; check the server and the user's rights", EXIT_ENV
            ) from None

    create_ext = "".join(f'CREATE EXTENSION IF NOT EXISTS :"{v}";\n' for v in names)
    if names:
        listed = ", ".join(f":'{v}'" for v in names)
        available = {
            row[0]
            for row in run(
                "postgres", f"SELECT name FROM pg_available_extensions WHERE name IN ({listed});\n"
            )
        }
        if major is None and set(extensions) - available:
            major = int(run("postgres", "SHOW server_version_num;\n")[0][0]) // 10000
        _check_available(info, extensions, available, major)
        if in_template:
            run("template1", create_ext)
    if not run("postgres", "SELECT 1 FROM pg_database WHERE datname = :'db';\n"):
        run("postgres", 'CREATE DATABASE :"db";\n')
    if names:  # the target may have existed before (`--database postgres`, an external server)
        run(info.database, create_ext)


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
