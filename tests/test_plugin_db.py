"""`--db-per-worker` against a real server: real pytest runs in subprocesses (pytester), xdist included.

The pure parts (names, URLs, settings precedence, session detection) are tested directly; everything
that touches PostgreSQL runs an inner suite and then looks at the server: which databases exist, what
they contain, and that nothing of the session is left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from db_test_action.errors import DbTestActionError
from db_test_action.plugin.db import (
    ENV_SESSION,
    DbSettings,
    ResetMode,
    SessionInfo,
    find_session,
    resolve_settings,
)
from db_test_action.plugin.template import (
    MAX_IDENTIFIER,
    SetupKind,
    admin_conninfo,
    clone_database,
    parse_setup,
    session_names,
    with_database,
)
from db_test_action.server.launch import ServerInfo

pytest_plugins = ["pytester"]

# The inner suites record what each test saw into a JSON-lines file; the barrier makes two xdist
# workers run the racy part at the same moment so the shared-database failure is deterministic.
RECORD_CONFTEST = """
import json, os, time
from pathlib import Path

IMPORT_URL = os.environ.get("DATABASE_URL")  # read at import time, like a settings module
OUT = Path(__file__).parent / "seen.jsonl"

def record(**fields):
    fields["worker"] = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with OUT.open("a") as fh:
        fh.write(json.dumps(fields) + "\\n")

def barrier(name, parties=2, timeout_s=30.0):
    here = Path(__file__).parent / f"barrier-{name}"
    here.mkdir(exist_ok=True)
    (here / f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{os.getpid()}").touch()
    deadline = time.monotonic() + timeout_s
    while len(list(here.iterdir())) < parties:
        assert time.monotonic() < deadline, f"barrier {name}: the other worker never came"
        time.sleep(0.01)
"""

SETUP_SCRIPT = """
import os, psycopg
from pathlib import Path
with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
    conn.execute("CREATE TABLE kinds (id serial PRIMARY KEY, name text NOT NULL)")
    conn.execute("CREATE TABLE items (id serial PRIMARY KEY, kind int REFERENCES kinds, name text UNIQUE)")
    conn.execute("INSERT INTO kinds (name) VALUES ('seed-a'), ('seed-b')")
with (Path(__file__).parent / "setup-count.txt").open("a") as fh:
    fh.write("ran\\n")
"""

WORKER_TESTS = """
import os, psycopg, pytest
from conftest import IMPORT_URL, record

@pytest.mark.parametrize("n", range(6))
def test_sees_own_database(n, db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
        kinds = conn.execute("SELECT count(*) FROM kinds").fetchone()[0]
    record(n=n, db=name, db_url=db_url, env_url=os.environ["DATABASE_URL"], import_url=IMPORT_URL, kinds=kinds)
"""


def _databases(server: ServerInfo) -> set[str]:
    with psycopg.connect(server.url("postgres")) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def _session_databases(server: ServerInfo, base_url: str) -> set[str]:
    base = base_url.rsplit("/", 1)[1]
    return {name for name in _databases(server) if name.startswith(base + "_")}


def _seen(pytester: pytest.Pytester) -> list[dict[str, object]]:
    path = pytester.path / "seen.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def inner(pytester: pytest.Pytester, fresh_db: str, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """An inner project whose DATABASE_URL is a fresh database; the session's databases derive from it."""
    monkeypatch.setenv("DATABASE_URL", fresh_db)
    for name in ("DB_TEST_ACTION_DB_PER_WORKER", ENV_SESSION):
        monkeypatch.delenv(name, raising=False)
    pytester.makeconftest(RECORD_CONFTEST)
    pytester.makepyfile(setup_schema=SETUP_SCRIPT)
    return pytester


# --- pure parts -----------------------------------------------------------------------------------


def test_names_fit_postgres_limit_and_differ_per_session() -> None:
    url = "postgresql://u@h:5432/" + "x" * 80
    one, two = session_names(url, "aaaa1111"), session_names(url, "bbbb2222")
    for names in (one, two):
        assert len(names.template.encode()) <= MAX_IDENTIFIER
        assert len(names.worker("gw123").encode()) <= MAX_IDENTIFIER
    assert one.template != two.template and one.worker("gw0") != two.worker("gw0")
    assert one.worker("gw0") != one.worker("gw1") != one.template


def test_urls_keep_driver_and_query_but_admin_connection_is_plain_libpq() -> None:
    url = "postgresql+asyncpg://u:p%40ss@h:5/app?prepared_statement_cache_size=0&sslmode=disable"
    assert with_database(url, "app_1_gw0") == (
        "postgresql+asyncpg://u:p%40ss@h:5/app_1_gw0?prepared_statement_cache_size=0&sslmode=disable"
    )
    assert admin_conninfo(url) == "postgresql://u:p%40ss@h:5/app?sslmode=disable"


def test_setup_text_is_a_callable_sql_files_or_a_command(tmp_path: Path) -> None:
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "02_b.sql").write_text("")
    (tmp_path / "sql" / "01_a.sql").write_text("")
    (tmp_path / "extra.sql").write_text("")
    assert parse_setup("app.db:create_schema", tmp_path).kind is SetupKind.CALLABLE
    sql_setup = parse_setup("sql, extra.sql", tmp_path)
    assert sql_setup.kind is SetupKind.SQL
    assert [p.name for p in sql_setup.files] == ["01_a.sql", "02_b.sql", "extra.sql"]
    assert parse_setup("alembic upgrade head", tmp_path).kind is SetupKind.COMMAND
    with pytest.raises(DbTestActionError, match=r"^--db-setup: missing\.sql does not exist"):
        parse_setup("missing.sql", tmp_path)


def test_settings_precedence_is_cli_then_ini_then_env(tmp_path: Path) -> None:
    def resolve(cli: dict[str, object], ini: dict[str, object], env: dict[str, str]) -> DbSettings:
        return resolve_settings(cli.get, ini.get, env, tmp_path)

    assert resolve({}, {}, {}) == DbSettings()  # off by default, whatever else is set
    assert resolve({}, {}, {"DB_TEST_ACTION_DB_RESET_MODE": "nonsense"}) == DbSettings()
    on = {"DB_TEST_ACTION_DB_PER_WORKER": "true"}
    assert resolve({}, {}, on).is_enabled
    assert not resolve({}, {"db_per_worker": "false"}, on).is_enabled  # ini beats env
    env = {**on, "DB_TEST_ACTION_DB_RESET_MODE": "clone", "DB_TEST_ACTION_DB_URL_ENV": "APP_DB"}
    assert resolve({}, {}, env).reset_mode is ResetMode.CLONE
    assert resolve({}, {"db_reset_mode": "truncate"}, env).reset_mode is ResetMode.TRUNCATE
    assert (
        resolve({"db_reset_mode": "clone"}, {"db_reset_mode": "truncate"}, env).reset_mode is ResetMode.CLONE
    )
    assert resolve({"db_url_env": "OTHER"}, {}, env).url_env == "OTHER"
    assert resolve({}, {"db_extensions": "pgcrypto, citext"}, on).extensions == ("pgcrypto", "citext")
    # Typed ini keys give native values: bools, and lists from `args` or TOML arrays.
    assert resolve({}, {"db_per_worker": True, "db_extensions": ["pgcrypto", "citext"]}, {}).extensions == (  # type: ignore[dict-item]
        "pgcrypto",
        "citext",
    )
    assert not resolve({}, {"db_per_worker": False}, on).is_enabled  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("cli", "ini", "env", "message"),
    [
        (
            {},
            {"db_per_worker": "maybe"},
            {},
            r'^db_per_worker \(ini\): "maybe" is not valid; use true or false$',
        ),
        (
            {},
            {},
            {"DB_TEST_ACTION_DB_PER_WORKER": "2"},
            r'^DB_TEST_ACTION_DB_PER_WORKER: "2" is not valid; use true or false$',
        ),
        (
            {"db_per_worker": True, "db_reset_mode": "fast"},
            {},
            {},
            r'^--db-reset-mode: "fast" is not valid; use truncate or clone$',
        ),
        (
            {"db_per_worker": True},
            {"db_setup": "nope.sql"},
            {},
            r"^db_setup \(ini\): nope\.sql does not exist",
        ),
        (
            {"db_per_worker": True, "db_url_env": "A-B"},
            {},
            {},
            r'^--db-url-env: "A-B" is not valid; use an environment variable name$',
        ),
    ],
)
def test_bad_values_name_where_they_came_from(
    cli: dict[str, object], ini: dict[str, str], env: dict[str, str], message: str, tmp_path: Path
) -> None:
    with pytest.raises(DbTestActionError, match=message):
        resolve_settings(cli.get, lambda key: ini.get(key, ""), env, tmp_path)


def test_only_a_child_of_the_owner_joins_its_session() -> None:
    session = SessionInfo("ab12cd34", 4242, "postgresql://u@h/db")
    env = {"PYTEST_XDIST_WORKER": "gw1", ENV_SESSION: session.to_env()}
    assert find_session(env, parent_pid=4242) == (session, "gw1")
    # A pytest run inside a worker's test inherits both variables, but its parent is that worker.
    assert find_session(env, parent_pid=999) is None
    assert find_session({ENV_SESSION: session.to_env()}, parent_pid=4242) is None  # not a worker
    assert find_session({**env, ENV_SESSION: "{not json"}, parent_pid=4242) is None
    # In-process (pytester.runpytest) inside a worker: the worker already claimed the session.
    assert find_session({**env, ENV_SESSION: session.to_env(claimed_by=77)}, parent_pid=4242) is None


# --- real runs ------------------------------------------------------------------------------------


def test_plugin_is_inert_without_the_flag(
    inner: pytest.Pytester, pg_server: ServerInfo, fresh_db: str
) -> None:
    inner.makepyfile(
        test_plain="""
        import os
        from conftest import IMPORT_URL

        def test_url_untouched():
            assert os.environ["DATABASE_URL"] == IMPORT_URL

        def test_no_fixture(request):
            with __import__("pytest").raises(Exception, match="db_url"):
                request.getfixturevalue("db_url")
        """
    )
    before = _databases(pg_server)
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "--db-setup", "nope.sql")
    result.assert_outcomes(passed=2)
    assert _databases(pg_server) == before
    assert not any("db-per-worker" in line for line in result.outlines)


def test_two_workers_get_distinct_cloned_databases_and_setup_runs_once(
    inner: pytest.Pytester, pg_server: ServerInfo, fresh_db: str
) -> None:
    inner.makepyfile(test_workers=WORKER_TESTS)
    result = inner.runpytest_subprocess(
        "-p", "no:cacheprovider", "-n", "2", "--db-per-worker", "--db-setup", "python setup_schema.py"
    )
    result.assert_outcomes(passed=6)
    seen = _seen(inner)
    by_worker = {row["worker"]: row["db"] for row in seen}
    assert set(by_worker) == {"gw0", "gw1"}
    assert len(set(by_worker.values())) == 2  # one database per worker
    base = fresh_db.rsplit("/", 1)[1]
    for row in seen:
        assert str(row["db"]).startswith(base + "_") and str(row["db"]).endswith("_" + str(row["worker"]))
        assert row["kinds"] == 2  # the schema and the seed rows came from the template
        assert row["import_url"] == row["env_url"] == row["db_url"]  # conftest saw the worker's URL
    assert (inner.path / "setup-count.txt").read_text() == "ran\n"
    assert _session_databases(pg_server, fresh_db) == set()  # workers' databases and template dropped


def test_without_xdist_one_database_and_header(
    inner: pytest.Pytester, pg_server: ServerInfo, fresh_db: str
) -> None:
    inner.makepyfile(test_workers=WORKER_TESTS)
    inner.makeini("[pytest]\ndb_per_worker = true\ndb_setup = python setup_schema.py\n")
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    result.assert_outcomes(passed=6)
    assert {row["db"] for row in _seen(inner)} == {fresh_db.rsplit("/", 1)[1] + "_" + _sid(result) + "_main"}
    result.stdout.fnmatch_lines(["db-per-worker: DATABASE_URL=postgresql://*_main (template *_tpl, setup*"])
    assert _session_databases(pg_server, fresh_db) == set()


def _sid(result: pytest.RunResult) -> str:
    header = next(line for line in result.outlines if line.startswith("db-per-worker:"))
    return header.split("template ", 1)[1].split(",")[0].rsplit("_", 2)[1]


def test_async_sqlalchemy_and_psycopg_with_an_async_callable_setup(
    inner: pytest.Pytester, pg_server: ServerInfo, fresh_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", fresh_db.replace("postgresql://", "postgresql+asyncpg://"))
    inner.makepyfile(
        models="""
        from sqlalchemy import Column, Integer, String
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.orm import declarative_base

        Base = declarative_base()

        class Item(Base):
            __tablename__ = "items"
            id = Column(Integer, primary_key=True)
            name = Column(String, unique=True, nullable=False)

        async def create_schema(url):
            engine = create_async_engine(url)  # never disposed: the plugin closes what is left open
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
        """,
        test_drivers="""
        import os, psycopg, pytest
        from sqlalchemy import func, select
        from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
        from models import Item

        @pytest.mark.parametrize("n", range(3))
        async def test_async_engine(n, db_url, db_reset):
            assert db_url.startswith("postgresql+asyncpg://") and db_url == os.environ["DATABASE_URL"]
            engine = create_async_engine(db_url)
            async with AsyncSession(engine) as session:
                assert await session.scalar(select(func.count()).select_from(Item)) == 0  # reset
                session.add(Item(id=1, name="fixed"))  # a fixed id: fine, the database is ours
                await session.commit()
            await engine.dispose()

        @pytest.mark.parametrize("n", range(3))
        def test_psycopg(n, db_url, db_reset):
            plain = db_url.replace("postgresql+asyncpg://", "postgresql://")
            with psycopg.connect(plain, autocommit=True) as conn:
                assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
                conn.execute("INSERT INTO items (id, name) VALUES (1, 'fixed')")
        """,
    )
    inner.makeini("[pytest]\nasyncio_mode = auto\n")
    result = inner.runpytest_subprocess(
        "-p", "no:cacheprovider", "-n", "2", "--db-per-worker", "--db-setup", "models:create_schema"
    )
    result.assert_outcomes(passed=6)
    assert _session_databases(pg_server, fresh_db) == set()


@pytest.fixture
def db_role(pg_server: ServerInfo) -> Iterator[str]:
    """A login role that is not a superuser; its name, dropped afterwards (with what it still owns)."""
    name = "dta_" + uuid.uuid4().hex[:8]
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.mark.parametrize("is_superuser", [True, False], ids=["superuser", "createdb-only"])
def test_sql_files_extensions_and_reset_modes(
    inner: pytest.Pytester,
    pg_server: ServerInfo,
    fresh_db: str,
    is_superuser: bool,
    db_role: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As a superuser db_reset DELETEs with FK triggers off; otherwise TRUNCATE … CASCADE, parents first."""
    if not is_superuser:
        with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} CREATEDB").format(sql.Identifier(db_role)))
        monkeypatch.setenv("DATABASE_URL", fresh_db.replace("postgres@", f"{db_role}@", 1))
    (inner.path / "schema").mkdir()
    (inner.path / "schema" / "01_tables.sql").write_text(
        "CREATE TABLE kinds (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name citext NOT NULL,"
        " upper_name text GENERATED ALWAYS AS (upper(name::text)) STORED);\n"
        "CREATE TABLE items (id serial PRIMARY KEY, kind int REFERENCES kinds, name text);\n"
        "CREATE SEQUENCE tickets;\n"
    )
    (inner.path / "schema" / "02_seed.sql").write_text("INSERT INTO kinds (name) VALUES ('a'), ('b');\n")
    inner.makepyfile(
        test_reset="""
        import psycopg, pytest

        def state(url):
            with psycopg.connect(url, autocommit=True) as conn:
                return (
                    conn.execute("SELECT array_agg(upper_name ORDER BY id) FROM kinds").fetchone()[0],
                    conn.execute("SELECT count(*) FROM items").fetchone()[0],
                    conn.execute("SELECT to_regclass('scratch') IS NOT NULL").fetchone()[0],
                )

        def dirty(url):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("INSERT INTO kinds (name) VALUES ('c')")
                conn.execute("INSERT INTO items (kind, name) VALUES (3, 'x')")
                conn.execute("CREATE TABLE IF NOT EXISTS scratch (v int)")
                conn.execute("INSERT INTO scratch VALUES (1)")
                assert conn.execute("SELECT nextval('tickets')").fetchone()[0] == 1

        @pytest.mark.parametrize("n", range(3))
        def test_reset(n, db_url, db_reset, request):
            kinds, items, has_scratch = state(db_url)
            assert (kinds, items) == (["A", "B"], 0)
            if request.config.getoption("db_reset_mode") == "clone":
                assert not has_scratch  # re-cloned: even the table a test made is gone
            elif n:
                with psycopg.connect(db_url) as conn:  # truncate: the table stays, empty
                    assert conn.execute("SELECT count(*) FROM scratch").fetchone() == (0,)
            with psycopg.connect(db_url) as conn:
                assert conn.execute("SELECT 'x'::citext = 'X'").fetchone() == (True,)  # extension
            dirty(db_url)
            with psycopg.connect(db_url) as conn:  # identity continues after the seed, not from 1
                assert conn.execute("SELECT max(id) FROM kinds").fetchone() == (3,)
        """
    )
    base = ["-p", "no:cacheprovider", "-p", "no:xdist", "--db-per-worker", "--db-setup", "schema"]
    base += ["--db-extensions", "citext"]
    inner.runpytest_subprocess(*base).assert_outcomes(passed=3)
    inner.runpytest_subprocess(*base, "--db-reset-mode", "clone").assert_outcomes(passed=3)
    assert _session_databases(pg_server, fresh_db) == set()


def test_shared_database_anti_patterns_fail_and_pass_with_the_plugin(
    inner: pytest.Pytester, pg_server: ServerInfo, fresh_db: str
) -> None:
    """Per-test create_all/drop_all, CREATE OR REPLACE FUNCTION and fixed UUIDs, two workers at once."""
    inner.makepyfile(
        test_fragile="""
        import os, uuid
        from sqlalchemy import Column, String, Uuid, create_engine, text
        from sqlalchemy.orm import declarative_base
        from conftest import barrier

        Base = declarative_base()

        class User(Base):
            __tablename__ = "users"
            id = Column(Uuid, primary_key=True)
            email = Column(String, unique=True)

        FIXED = uuid.UUID("00000000-0000-0000-0000-000000000001")

        def test_signup():
            url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://")
            engine = create_engine(url)
            barrier("start")
            try:
                Base.metadata.create_all(engine)
                with engine.begin() as conn:
                    conn.execute(text(
                        "CREATE OR REPLACE FUNCTION norm(t text) RETURNS text AS 'SELECT lower(t)' LANGUAGE sql"
                    ))
                    conn.execute(text("INSERT INTO users VALUES (:id, norm('A@x'))"), {"id": FIXED})
            finally:
                barrier("inserted")  # wait for the other worker either way, then clean up like the seed did
            Base.metadata.drop_all(engine)
            engine.dispose()
        """
    )
    args = ["-p", "no:cacheprovider", "-n", "2", "--dist", "each"]
    shared = inner.runpytest_subprocess(*args)
    assert shared.ret == 1
    # which collision wins the race varies (both workers start create_all at the barrier): the duplicate
    # fixed key, the concurrent CREATE TABLE / CREATE FUNCTION, or the neighbour's drop_all — all the seed's
    out = shared.stdout.str()
    collisions = ("UniqueViolation", "duplicate key", "already exists", "tuple concurrently updated",
                  "does not exist", "DependentObjectsStillExist")  # fmt: skip
    assert any(c in out for c in collisions), out[-3000:]
    for name in ("barrier-start", "barrier-inserted"):
        for path in (inner.path / name).iterdir():
            path.unlink()
    isolated = inner.runpytest_subprocess(*args, "--db-per-worker")
    isolated.assert_outcomes(passed=2)
    assert _session_databases(pg_server, fresh_db) == set()


def test_two_sessions_on_one_server_do_not_collide(
    inner: pytest.Pytester, pg_server: ServerInfo, fresh_db: str
) -> None:
    inner.makepyfile(
        test_one="""
        import psycopg
        from conftest import barrier, record

        def test_meet(db_url):
            with psycopg.connect(db_url) as conn:
                record(db=conn.execute("SELECT current_database()").fetchone()[0])
            barrier("both-sessions")  # both sessions hold their databases at this point
        """
    )
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        "--db-per-worker",
        "-q",
    ]
    procs = [subprocess.Popen(cmd, cwd=inner.path, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert len({row["db"] for row in _seen(inner)}) == 2
    assert _session_databases(pg_server, fresh_db) == set()


def test_errors_are_one_line_and_leave_nothing_behind(
    inner: pytest.Pytester, pg_server: ServerInfo, fresh_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    inner.makepyfile(test_x="def test_x(): pass")
    inner.makepyfile(
        failing="import sys\nprint('creating tables')\nprint('boom: relation kinds exists', file=sys.stderr)\nsys.exit(3)"
    )
    failed = inner.runpytest_subprocess(
        "-p", "no:cacheprovider", "--db-per-worker", "--db-setup", "python failing.py"
    )
    assert failed.ret == pytest.ExitCode.USAGE_ERROR
    failed.stderr.fnmatch_lines(
        [
            "ERROR: --db-setup: `python failing.py` exited with 3: creating tables | boom: relation kinds exists; *"
        ]
    )
    assert _session_databases(pg_server, fresh_db) == set()  # the half-made template is gone

    inner.makepyfile(broken="def create(url):\n    raise RuntimeError('no such table: kinds')\n")
    raised = inner.runpytest_subprocess(
        "-p", "no:cacheprovider", "--db-per-worker", "--db-setup", "broken:create"
    )
    raised.stderr.fnmatch_lines(
        ["ERROR: --db-setup: broken:create raised RuntimeError: no such table: kinds; *"]
    )

    (inner.path / "conftest.py").write_text("raise ImportError('settings broke')\n")
    conftest_failed = inner.runpytest_subprocess("-p", "no:cacheprovider", "--db-per-worker")
    assert conftest_failed.ret == pytest.ExitCode.USAGE_ERROR
    assert _session_databases(pg_server, fresh_db) == set()  # cloned before the conftest, dropped after

    monkeypatch.delenv("DATABASE_URL")
    missing = inner.runpytest_subprocess("-p", "no:cacheprovider", "--db-per-worker")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(["ERROR: --db-per-worker: DATABASE_URL is not set; export DATABASE_URL=*"])


def test_a_user_without_createdb_gets_a_one_line_error(
    inner: pytest.Pytester,
    pg_server: ServerInfo,
    fresh_db: str,
    db_role: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", fresh_db.replace("postgres@", f"{db_role}@", 1))
    inner.makepyfile(test_x="def test_x(): pass")
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "--db-per-worker")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --db-per-worker: preparing t_*_tpl: permission denied to create database; check the user's rights"
        ]
    )


def test_busy_template_is_reported_with_who_holds_it(pg_server: ServerInfo, fresh_db: str) -> None:
    target = fresh_db.rsplit("/", 1)[1] + "_copy"
    with psycopg.connect(fresh_db) as holder:
        holder.execute("SELECT 1")
        with pytest.raises(
            DbTestActionError, match=r"template t_\w+ is busy \(pid \d+ .*\); close connections"
        ):
            clone_database(fresh_db, fresh_db.rsplit("/", 1)[1], target)
    assert target not in _databases(pg_server)


def test_keep_leaves_the_databases_for_debugging(
    inner: pytest.Pytester, pg_server: ServerInfo, fresh_db: str
) -> None:
    inner.makepyfile(test_workers=WORKER_TESTS)
    args = ["-p", "no:cacheprovider", "-p", "no:xdist", "--db-per-worker", "--db-keep"]
    inner.runpytest_subprocess(*args, "--db-setup", "python setup_schema.py").assert_outcomes(passed=6)
    kept = _session_databases(pg_server, fresh_db)
    assert len(kept) == 2 and any(name.endswith("_tpl") for name in kept)
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        for name in kept:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_crashed_workers_database_is_swept_by_the_controller(
    inner: pytest.Pytester, pg_server: ServerInfo, fresh_db: str
) -> None:
    inner.makepyfile(
        test_crash="""
        import os, pytest

        @pytest.mark.parametrize("n", range(4))
        def test_maybe_crash(n, db_url):
            if n == 0:
                os._exit(1)  # the worker dies without unconfigure: its database stays behind
        """
    )
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--db-per-worker")
    assert result.ret == 1
    assert "crashed" in result.stdout.str()
    assert _session_databases(pg_server, fresh_db) == set()


def test_reset_blocked_by_an_open_transaction_names_the_blocker(
    inner: pytest.Pytester, pg_server: ServerInfo, fresh_db: str
) -> None:
    inner.makepyfile(
        test_blocked="""
        import psycopg
        import db_test_action.plugin.reset

        db_test_action.plugin.reset.LOCK_TIMEOUT_MS = 300  # the real 10 s would only slow this test down
        LEFT_OPEN = []

        def test_leaves_a_transaction_open(db_url, db_reset):
            conn = psycopg.connect(db_url)
            conn.execute("SELECT * FROM kinds FOR UPDATE")  # row locks held until commit, never comes
            LEFT_OPEN.append(conn)

        def test_next(db_reset):
            pass
        """
    )
    result = inner.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:xdist", "--db-per-worker", "--db-setup", "python setup_schema.py"
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*db_reset: *_main has tables locked by another connection (pid * idle in transaction); commit or close*"
        ]
    )
    assert _session_databases(pg_server, fresh_db) == set()


@pytest.mark.e2e
def test_fragile_example_is_green_with_only_the_plugin_switched_on(
    pg_server: ServerInfo, fresh_db: str
) -> None:
    """examples/fragile collides on a shared database under `-n 2`; `--db-per-worker` alone fixes it."""
    examples = Path(__file__).resolve().parent.parent / "examples"
    if not (examples / "fragile" / "conftest.py").is_file():
        pytest.skip("examples/fragile is absent")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST_", "DB_TEST_ACTION_"))}
    env["DATABASE_URL"] = fresh_db
    cmd = [sys.executable, "-m", "pytest", "fragile", "-n", "2", "-q"]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cmd, *extra], cwd=examples, env=env, capture_output=True, text=True, timeout=300
        )

    shared = run()
    assert shared.returncode == 1, shared.stdout[-2000:]
    collisions = ("UniqueViolation", "tuple concurrently updated", "DependentObjectsStillExist")
    assert any(word in shared.stdout for word in collisions), shared.stdout[-2000:]
    isolated = run("--db-per-worker", "--db-extensions", "pgcrypto")
    assert isolated.returncode == 0, isolated.stdout[-3000:]
    assert " error" not in isolated.stdout.splitlines()[-1]
    assert _session_databases(pg_server, fresh_db) == set()


def test_url_env_names_the_variable_to_read_and_rewrite(
    inner: pytest.Pytester, pg_server: ServerInfo, fresh_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("APP_DB", fresh_db)
    inner.makepyfile(
        test_app="""
        import os

        def test_app(db_url):
            assert os.environ["APP_DB"] == db_url and db_url.endswith("_main")
            assert "DATABASE_URL" not in os.environ
        """
    )
    inner.makeini("[pytest]\ndb_url_env = APP_DB\n")
    inner.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist", "--db-per-worker").assert_outcomes(
        passed=1
    )
    assert _session_databases(pg_server, fresh_db) == set()


def test_pyproject_native_values_and_bad_ini_values(
    inner: pytest.Pytester, pg_server: ServerInfo, fresh_db: str
) -> None:
    inner.makepyprojecttoml('[tool.pytest.ini_options]\ndb_per_worker = true\ndb_extensions = ["citext"]\n')
    inner.makepyfile(
        test_citext="""
        import psycopg

        def test_citext(db_url):
            with psycopg.connect(db_url) as conn:
                assert conn.execute("SELECT 'a'::citext = 'A'").fetchone() == (True,)
        """
    )
    inner.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist").assert_outcomes(passed=1)
    assert _session_databases(pg_server, fresh_db) == set()
    inner.makefile(".ini", pytest="[pytest]\ndb_per_worker = maybe\n")  # pytest.ini wins over pyproject
    bad = inner.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    # pytest's own type check words the middle (it differs between pytest versions); ours names the key
    # and the fix, on one line
    bad.stderr.fnmatch_lines(["ERROR: db_per_worker (ini): *maybe*; use true or false"])
