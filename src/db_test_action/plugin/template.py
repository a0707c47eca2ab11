"""Database operations behind `--db-per-worker`: name, prepare, clone, reset and drop test databases.

Why a template: running the schema setup (`alembic upgrade head`, `create_all`) once and cloning the
result with `CREATE DATABASE … TEMPLATE` costs milliseconds per worker, while running the setup per
worker (or per test) costs seconds and is where shared-database races come from. The pytest wiring
lives in `plugin_db`; this module knows nothing about pytest and raises `DbTestActionError` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from db_test_action.errors import EXIT_ENV, DbTestActionError
from db_test_action.server.launch import redact

SEED_SCHEMA = "db_test_action_seed"  # snapshots of rows the setup inserted (only when it inserted any)
MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1
# Query keys libpq understands; SQLAlchemy/asyncpg-only keys (prepared_statement_cache_size…) are
# dropped from our own admin connections so a driver-specific URL still works for us.
LIBPQ_KEYS = frozenset(
    "sslmode sslcert sslkey sslrootcert sslpassword sslcrl channel_binding gssencmode options host hostaddr "
    "port user password passfile connect_timeout application_name target_session_attrs service".split()
)
# Tables a reset may empty: ordinary and partitioned tables outside system schemas, our seed schema
# and extensions (PostGIS's spatial_ref_sys must survive).
USER_TABLES_SQL = f"""
SELECT c.oid, c.oid::regclass::text AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND n.nspname NOT IN ('pg_catalog', 'information_schema', '{SEED_SCHEMA}') AND n.nspname NOT LIKE 'pg\\_%'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                   AND d.deptype = 'e')
"""


class SetupKind(str, Enum):
    COMMAND = "command"  # a shell command, run with the template's URL in the URL variable
    CALLABLE = "callable"  # `module:function`, sync or async, given the template's URL
    SQL = "sql"  # .sql files (or directories of them), executed in order


class ResetMode(str, Enum):
    TRUNCATE = "truncate"
    CLONE = "clone"


@dataclass(frozen=True, slots=True)
class Setup:
    kind: SetupKind
    text: str  # as the user wrote it, for messages
    files: tuple[Path, ...] = ()  # SQL only, expanded and ordered


@dataclass(frozen=True, slots=True)
class Names:
    """Per-session database names: unique per session id so concurrent sessions never collide."""

    prefix: str

    @property
    def template(self) -> str:
        return f"{self.prefix}_tpl"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}_{_slug(worker_id, 12)}"


def _slug(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_")[:limit] or "db"


def session_names(base_url: str, session_id: str) -> Names:
    """`<base db>_<session>`; the base is shortened so `_<worker>` still fits in 63 bytes."""
    base = unquote(urlsplit(base_url).path.lstrip("/")) or "postgres"
    room = MAX_IDENTIFIER - len(session_id) - 1 - 13  # 13 = "_" + the longest worker slug
    return Names(prefix=f"{_slug(base, room)}_{_slug(session_id, 16)}")


def with_database(url: str, database: str) -> str:
    """The same URL (scheme, driver, credentials, query) pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def admin_conninfo(url: str) -> str:
    """A URL psycopg accepts: `postgresql+asyncpg://` → `postgresql://`, driver-only query keys dropped."""
    parts = urlsplit(url)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k in LIBPQ_KEYS])
    return urlunsplit(parts._replace(scheme="postgresql", query=query))


def check_url(url: str | None, env_name: str) -> str:
    """The URL from the environment, or the one-line error the user sees without one."""
    if not url:
        raise DbTestActionError(
            f"--db-per-worker: {env_name} is not set; export {env_name}=postgresql://user@host:port/db "
            "(or run under `db-test-action postgres --`)"
        )
    scheme = urlsplit(url).scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise DbTestActionError(
            f"--db-per-worker: {env_name}={redact(url)!r} is not a postgresql:// URL; set it to postgresql://user@host:port/db"
        )
    return url


def parse_setup(text: str, base_dir: Path) -> Setup:
    """Decide what `--db-setup` means: `pkg.mod:func`, `a.sql,dir/`, or any other text as a command."""
    text = text.strip()
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", text):
        return Setup(SetupKind.CALLABLE, text)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    is_sql = bool(parts) and all(p.endswith(".sql") or (base_dir / p).is_dir() for p in parts)
    if not is_sql:
        return Setup(SetupKind.COMMAND, text)
    files: list[Path] = []
    for part in parts:
        path = base_dir / part
        if path.is_dir():
            found = sorted(path.glob("*.sql"))
            if not found:
                raise DbTestActionError(f"--db-setup: {part} holds no .sql files; point at the files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DbTestActionError(
                f"--db-setup: {part} does not exist (relative to {base_dir}); fix the path"
            )
    return Setup(SetupKind.SQL, text, tuple(files))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@contextlib.contextmanager
def connect(url: str, database: str | None = None) -> Iterator[psycopg.Connection]:
    """An autocommit connection for DDL; connection failures become one-line environment errors."""
    target = with_database(url, database) if database else url
    try:
        conn = psycopg.connect(admin_conninfo(target), autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise DbTestActionError(
            f"--db-per-worker: cannot connect to {redact(target)} ({_first_line(exc)}); check the server is up",
            EXIT_ENV,
        ) from None
    with conn:
        yield conn


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def ensure_template(
    base_url: str, names: Names, setup: Setup | None, extensions: tuple[str, ...], *, env_name: str, cwd: Path
) -> bool:
    """Create and set up the template unless a ready one exists; True when this call did the setup.

    An advisory lock makes this safe to call from every process: the first one (the xdist
    controller) does the work, later ones find the template ready. Ready means `ALLOW_CONNECTIONS
    false`, set last, which also stops anyone from connecting to it and blocking the clones.
    """
    template = names.template
    with connect(base_url) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_lock_key(template),))
        row = conn.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (template,)).fetchone()
        if row is not None and not row[0]:
            return False
        if row is not None:  # a half-made template from a setup that crashed: start over
            _drop(conn, template)
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
            with connect(base_url, template) as tpl:
                for name in extensions:
                    try:
                        tpl.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name)))
                    except psycopg.Error as exc:
                        raise DbTestActionError(
                            f"--db-extensions: {name}: {_first_line(exc)}; install it on the server or drop it"
                        ) from None
            if setup is not None:
                run_setup(setup, with_database(base_url, template), env_name=env_name, cwd=cwd)
            with connect(base_url, template) as tpl:
                snapshot_seed(tpl)
            # Connections the setup left open (an engine nobody disposed) would make the template busy.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (template,),
            )
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(template))
            )
        except BaseException as exc:
            with contextlib.suppress(psycopg.Error):
                _drop(conn, template)
            if isinstance(exc, psycopg.Error):
                raise DbTestActionError(
                    f"--db-per-worker: preparing {template}: {_first_line(exc)}; check the user's rights",
                    EXIT_ENV,
                ) from None
            raise
        return True


def run_setup(setup: Setup, url: str, *, env_name: str, cwd: Path) -> None:
    """Run the user's schema setup once against `url` (the template), which is also put in `env_name`."""
    if setup.kind is SetupKind.COMMAND:
        env = dict(os.environ, **{env_name: url})
        proc = subprocess.run(
            setup.text, shell=True, cwd=cwd, env=env, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            lines = [line for line in (proc.stdout + "\n" + proc.stderr).splitlines() if line.strip()]
            tail = " | ".join(lines[-6:]) or "no output"
            raise DbTestActionError(
                f"--db-setup: `{setup.text}` exited with {proc.returncode}: {tail}; "
                f"run it by hand with {env_name} set to a scratch database"
            )
    elif setup.kind is SetupKind.SQL:
        with connect(url) as conn:
            for path in setup.files:
                try:
                    conn.execute(path.read_text(encoding="utf-8"))  # no parameters: many statements allowed
                except psycopg.Error as exc:
                    raise DbTestActionError(f"--db-setup: {path}: {_first_line(exc)}; fix the SQL") from None
    else:
        _call_setup(setup.text, url, env_name=env_name, cwd=cwd)


def _call_setup(target: str, url: str, *, env_name: str, cwd: Path) -> None:
    module_name, func_name = target.split(":")
    added = str(cwd) not in sys.path
    if added:  # `pytest` (unlike `python -m pytest`) does not put the project on sys.path yet
        sys.path.insert(0, str(cwd))
    previous = os.environ.get(env_name)
    os.environ[env_name] = url  # settings modules read the URL at import time
    try:
        try:
            func = getattr(importlib.import_module(module_name), func_name)
        except (ImportError, AttributeError) as exc:
            raise DbTestActionError(
                f"--db-setup: cannot load {target} ({exc}); check the module path"
            ) from None
        try:
            result = func(url) if inspect.signature(func).parameters else func()
            if inspect.isawaitable(result):
                asyncio.run(_await(result))
        except DbTestActionError:
            raise
        except Exception as exc:
            raise DbTestActionError(
                f"--db-setup: {target} raised {type(exc).__name__}: {_first_line(exc)}; fix the setup function"
            ) from exc
    finally:
        if previous is None:
            os.environ.pop(env_name, None)
        else:
            os.environ[env_name] = previous
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(str(cwd))


async def _await(awaitable: object) -> object:
    return await awaitable  # type: ignore[misc]


def snapshot_seed(conn: psycopg.Connection) -> int:
    """Copy rows the setup inserted (alembic_version, reference data) so a TRUNCATE reset can restore them.

    Nothing is created when the setup inserted nothing. Tables are stored parents-first so the
    restoring inserts satisfy foreign keys; sequences keep the value the setup left them at.
    """
    tables = [row[1] for row in conn.execute(USER_TABLES_SQL)]
    seeded: list[str] = []
    if tables:
        probe = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {} WHERE EXISTS (SELECT 1 FROM {})").format(sql.Literal(t), sql.SQL(t))
            for t in tables
        )
        seeded = [row[0] for row in conn.execute(probe)]
    sequences = conn.execute(
        "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences"
        " WHERE last_value IS NOT NULL AND schemaname NOT IN ('pg_catalog', 'information_schema')"
    ).fetchall()
    if not seeded and not sequences:
        return 0
    schema = sql.Identifier(SEED_SCHEMA)
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
    conn.execute(
        sql.SQL(
            "CREATE TABLE {}.plan (pos int, target text, snapshot text, columns text, value bigint)"
        ).format(schema)
    )
    for pos, table in enumerate(_parents_first(conn, seeded)):
        columns = ", ".join(
            sql.Identifier(row[0]).as_string(conn)
            for row in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
                " AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
                (table,),
            )
        )
        snapshot = f"{SEED_SCHEMA}.t{pos}"
        conn.execute(
            sql.SQL("CREATE TABLE {} AS SELECT {} FROM {}").format(
                sql.SQL(snapshot), sql.SQL(columns), sql.SQL(table)
            )
        )
        conn.execute(
            sql.SQL("INSERT INTO {}.plan VALUES (%s, %s, %s, %s, NULL)").format(schema),
            (pos, table, snapshot, columns),
        )
    for name, value in sequences:
        conn.execute(
            sql.SQL("INSERT INTO {}.plan VALUES (NULL, %s, NULL, NULL, %s)").format(schema), (name, value)
        )
    return len(seeded)


def _parents_first(conn: psycopg.Connection, tables: list[str]) -> list[str]:
    """Order tables so referenced ones come first (cycles keep their original order)."""
    edges = conn.execute(
        "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint"
        " WHERE contype = 'f' AND conrelid <> confrelid"
    ).fetchall()
    wanted = set(tables)
    parents = {t: {p for c, p in edges if c == t and p in wanted} for t in tables}
    ordered: list[str] = []
    while parents:
        ready = [t for t, ps in parents.items() if not ps - set(ordered)] or [next(iter(parents))]
        for t in ready:
            ordered.append(t)
            del parents[t]
    return ordered


def clone_database(base_url: str, template: str, name: str) -> None:
    """`CREATE DATABASE name TEMPLATE template`, replacing a leftover of the same name."""
    with connect(base_url) as conn:
        _drop(conn, name)
        try:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        except psycopg.errors.ObjectInUse:
            who = conn.execute(
                "SELECT string_agg(format('pid %%s %%s', pid, coalesce(nullif(application_name, ''), usename)), ', ')"
                " FROM pg_stat_activity WHERE datname = %s",
                (template,),
            ).fetchone()
            raise DbTestActionError(
                f"--db-per-worker: template {template} is busy ({(who and who[0]) or 'other connections'}); "
                "close connections to the template database",
                EXIT_ENV,
            ) from None
        except psycopg.Error as exc:
            raise DbTestActionError(
                f"--db-per-worker: cannot create {name} from {template} ({_first_line(exc)}); "
                "the user needs CREATEDB",
                EXIT_ENV,
            ) from None


def _drop(conn: psycopg.Connection, name: str) -> None:
    """Drop even with stale connections (terminated first; FORCE from PostgreSQL 13)."""
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )
    force = sql.SQL(" WITH (FORCE)") if conn.info.server_version >= 130000 else sql.SQL("")
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force))


def drop_databases(base_url: str, names: Iterable[str]) -> None:
    with connect(base_url) as conn:
        for name in names:
            _drop(conn, name)


def session_databases(base_url: str, names: Names) -> list[str]:
    """Every database of this session still on the server (workers that crashed leave theirs)."""
    with connect(base_url) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE left(datname, %s) = %s",
            (len(names.prefix) + 1, names.prefix + "_"),
        )
        return [row[0] for row in rows]
