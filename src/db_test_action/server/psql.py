"""`psql` as the client for our few administrative statements (extensions, CREATE/DROP DATABASE), and
the same contract through psycopg where there is no psql.

Why not the Python driver: importing psycopg costs 0.15–0.3 s (more on a fresh runner, where it is
compiled first), a large share of `postgres start` (~0.2 s otherwise) and of `run`'s own work around
pytest, while a psql call takes ~10 ms. psql sits next to the server in every PostgreSQL package, and
GitHub's Ubuntu images carry it. Where there is none, the callers use psycopg as before.

Names reach psql as variables (`-v name=value`) and are quoted by psql itself (`:'name'` a literal,
`:"name"` an identifier), never pasted into SQL. The connection comes from PG* variables that we set
(the user's own PGOPTIONS, PGSERVICE, … are dropped; SSL/GSS transport settings are kept), so a
password never appears on a command line and a database name is never parsed as a connection string.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

from db_test_action.contract import TOOL_APP
from db_test_action.errors import DbTestActionError, first_line
from db_test_action.server.binaries import find_bin_dir
from db_test_action.server.info import ServerInfo
from db_test_action.server.procs import die_with_parent

_SEP = "\x1f"  # field separator of the unaligned output: never in a name, a number or a boolean
_CONNECT_FAILED = 2  # psql's exit status when the connection failed or was lost


class PsqlError(Exception):
    """A call failed: `first` is its first error line (without psql's `psql:<stdin>:N:` prefix);
    `connect` when it never reached the database (the caller may try another)."""

    def __init__(self, first: str, *, connect: bool) -> None:
        super().__init__(first)
        self.first = first
        self.connect = connect


def find_psql(bin_dir: Path | None = None) -> Path | None:
    """psql beside the server binaries (`bin_dir`, else the ones `postgres start` would use), else on PATH."""
    if bin_dir is None:
        try:
            bin_dir = find_bin_dir()
        except DbTestActionError:
            bin_dir = None
    if bin_dir is not None:
        candidate = bin_dir / "psql"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("psql")
    return Path(found) if found else None


def run_psql(
    psql: Path,
    info: ServerInfo,
    database: str,
    script: str,
    variables: Mapping[str, str] = {},  # read only
    *,
    host: str | None = None,
    timeout_s: float = 60.0,
) -> list[list[str]]:
    """Run `script` on `database`; returns the rows of its output (fields as text). `host` may be the
    server's socket directory (trust, no password)."""
    # The user's transport settings (PGSSLMODE, PGSSLROOTCERT, PGGSSENCMODE, …) stay, as libpq would read
    # them for the driver; every other PG* variable (PGSERVICE, PGOPTIONS, PGDATABASE, …) is ours to set.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") or k.startswith(("PGSSL", "PGGSS"))}
    env.update(
        PGHOST=host or info.host, PGPORT=str(info.port), PGUSER=info.user, PGDATABASE=database,
        PGAPPNAME=TOOL_APP, PGCONNECT_TIMEOUT="10",
    )  # fmt: skip
    if info.password and host is None:
        env["PGPASSWORD"] = info.password
    # -X: no ~/.psqlrc; -w: never prompt for a password (fail instead), even on a terminal
    cmd = [str(psql), "-X", "-w", "-q", "-A", "-t", "-F", _SEP, "-v", "ON_ERROR_STOP=1"]
    for name, value in variables.items():
        cmd += ["-v", f"{name}={value}"]
    try:
        proc = subprocess.run(
            cmd, input=script, env=env, capture_output=True, text=True, timeout=timeout_s, check=False,
            preexec_fn=die_with_parent(signal.SIGKILL),
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise PsqlError(f"psql did not finish in {timeout_s:g}s", connect=False) from None
    except OSError as exc:
        raise PsqlError(f"cannot run {psql} ({exc.strerror})", connect=True) from None
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or [f"psql exit {proc.returncode}"]
        first = lines[0]
        if first.startswith("psql:") and ": " in first:
            first = first.split(": ", 1)[1]
        raise PsqlError(first, connect=proc.returncode == _CONNECT_FAILED)
    return [line.split(_SEP) for line in proc.stdout.splitlines() if line]


_VARIABLE = re.compile(r""":(["'])(\w+)\1""")  # psql's :'literal' and :"identifier"


def run_with_driver(
    info: ServerInfo,
    database: str,
    script: str,
    variables: Mapping[str, str] = {},  # read only
) -> list[list[str]]:
    """`run_psql` through psycopg: the same script (statements end with `;` and a newline; each runs on
    its own, as psql sends them, so CREATE/DROP DATABASE stay outside a transaction), the same
    variables, rows as text."""
    import psycopg
    from psycopg import sql

    def composed(statement: str) -> sql.Composed:
        parts: list[sql.Composable] = []
        last = 0
        for match in _VARIABLE.finditer(statement):
            value = variables[match.group(2)]
            parts += [sql.SQL(statement[last : match.start()]),
                      sql.Identifier(value) if match.group(1) == '"' else sql.Literal(value)]  # fmt: skip
            last = match.end()
        return sql.Composed([*parts, sql.SQL(statement[last:])])

    try:
        conn = psycopg.connect(
            info.url(database), autocommit=True, connect_timeout=10, application_name=TOOL_APP
        )
    except psycopg.Error as exc:
        raise PsqlError(first_line(exc), connect=True) from None
    rows: list[list[str]] = []
    with conn:
        try:
            for statement in filter(None, (s.strip() for s in script.split(";\n"))):
                cursor = conn.execute(composed(statement))
                if cursor.description is not None:
                    rows += [[str(value) for value in row] for row in cursor.fetchall()]
        except psycopg.Error as exc:
            raise PsqlError(first_line(exc), connect=False) from None
    return rows
