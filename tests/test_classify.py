"""Root-cause classes and categories; the seed story rebuilt from real asyncpg/SQLAlchemy exceptions."""

from __future__ import annotations

import pytest
from pytest_runs import run_pytest

from db_test_action.config.report import ReportConfig, resolve_report_config
from db_test_action.junit.files import parse_junit_file
from db_test_action.model import CategoryRule, CauseRule, Occurrence, Outcome, Status
from db_test_action.report.build import build_report
from db_test_action.report.classify import category_for, classify_failure, default_category, group_causes

# Texts as the drivers print them (SQLAlchemy 2.0 wrapper style from the seed project's CI log,
# SQLAlchemy 2.1, psycopg 3, psycopg2); the real-Postgres test below covers what is installed here.
CASES = [
    (
        "sqlalchemy.exc.InternalError: (sqlalchemy.dialects.postgresql.asyncpg.Error) <class "
        "'asyncpg.exceptions.DependentObjectsStillExistError'>: cannot drop table workspaces because other "
        "objects depend on it",
        "dependent-objects",
        "table workspaces",
    ),
    (
        "sqlalchemy.exc.InternalError: (sqlalchemy.dialects.postgresql.asyncpg.Error) <class "
        "'asyncpg.exceptions.InternalServerError'>: tuple concurrently updated",
        "concurrent-ddl",
        None,
    ),
    (
        "sqlalchemy.exc.IntegrityError: (sqlalchemy.dialects.postgresql.asyncpg.IntegrityError) <class "
        "'asyncpg.exceptions.UniqueViolationError'>: duplicate key value violates unique constraint "
        '"workspaces_pkey"',
        "unique-violation",
        "workspaces_pkey",
    ),
    (
        'psycopg.errors.UniqueViolation: duplicate key value violates unique constraint "pg_extension_name_index"',
        "concurrent-ddl",
        "pg_extension_name_index",
    ),
    (
        'psycopg2.errors.ForeignKeyViolation: insert or update on table "m" violates foreign key constraint "m_fk"',
        "fk-violation",
        "m_fk",
    ),
    ("asyncpg.exceptions.DeadlockDetectedError: deadlock detected", "deadlock", None),
    (
        "psycopg.errors.SerializationFailure: could not serialize access due to concurrent update",
        "serialization",
        None,
    ),
    (
        "asyncpg.exceptions.TooManyConnectionsError: sorry, too many clients already",
        "too-many-connections",
        None,
    ),
    ('psycopg.errors.ObjectInUse: database "t_1" is being accessed by other users', "database-in-use", "t_1"),
    (
        "asyncpg.exceptions.LockNotAvailableError: canceling statement due to lock timeout",
        "lock-timeout",
        None,
    ),
    (
        'asyncpg.exceptions.UndefinedTableError: relation "users" does not exist',
        "undefined-object",
        '"users"',
    ),
    (
        "psycopg.errors.UndefinedFunction: function gen_random_uuid() does not exist",
        "undefined-object",
        "gen_random_uuid()",
    ),
    ("OSError: Multiple exceptions: [Errno 111] Connect call failed ('127.0.0.1', 5432)", "connection", None),
    (
        "asyncpg.exceptions.ConnectionDoesNotExistError: connection was closed in the middle of operation",
        "connection",
        None,
    ),
    ("RuntimeError: Task got Future <Future pending> attached to a different loop", "event-loop", None),
    ("RuntimeError: Event loop is closed", "event-loop", None),
    (
        "asyncpg.exceptions._base.InterfaceError: cannot perform operation: another operation is in progress",
        "event-loop",
        None,
    ),
    ("asyncpg.exceptions.QueryCanceledError: canceling statement due to statement timeout", "timeout", None),
    ("TimeoutError", "timeout", None),
    ("AssertionError: assert 401 == 200", "other", None),
]


@pytest.mark.parametrize(("message", "key", "detail"), CASES)
def test_classify_failure_knows_the_driver_texts(message, key, detail):
    cause = classify_failure(message, "")
    assert (cause.key, cause.detail) == (key, detail)
    assert cause.title and cause.hint


def test_chained_exception_in_traceback_is_found_when_the_message_is_generic():
    text = (
        "E   asyncpg.exceptions.DependentObjectsStillExistError: cannot drop table a because other objects depend\n"
        "\nThe above exception was the direct cause of the following exception:\n"
        "E   sqlalchemy.exc.DBAPIError: (sqlalchemy.dialects.postgresql.asyncpg.Error) see above"
    )
    assert classify_failure("sqlalchemy.exc.DBAPIError: see above", text).key == "dependent-objects"


def test_user_rules_come_first_and_name_a_detail():
    rule = CauseRule(
        "missing-pgcrypto", "pgcrypto missing", "install it", r"function (?P<detail>gen_random_\w+)"
    )
    cause = classify_failure("function gen_random_uuid() does not exist", "", (rule,))
    assert (cause.key, cause.detail, cause.hint) == ("missing-pgcrypto", "gen_random_uuid", "install it")


def _occ(test_id: str, file: str | None, markers: tuple[str, ...] = ()) -> Occurrence:
    return Occurrence(test_id, file, None, Outcome.PASSED, None, 0.0, "", "", "x.xml", markers=markers)


def test_categories_default_to_the_module_and_follow_config_globs_and_markers():
    assert default_category("tests/test_workspace_isolation.py", "x") == "workspace_isolation"
    assert default_category(None, "com.example.FooTest::testBar") == "FooTest"
    rules = (CategoryRule("api", ("tests/api/*",)), CategoryRule("slow", ("marker:slow",)))
    assert category_for(_occ("tests/api/test_a.py::test_x", "tests/api/test_a.py"), rules) == "api"
    assert category_for(_occ("tests/test_b.py::test_y", "tests/test_b.py", ("slow",)), rules) == "slow"
    assert category_for(_occ("tests/test_b.py::test_y", "tests/test_b.py"), rules) == "b"


# --- the seed story, with real exceptions from a real PostgreSQL -------------------------------------------

SEED_CONFTEST = """
import asyncio
import os

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine


def pytest_configure(config):
    config.addinivalue_line("markers", "breaks(kind, phase): re-raise a real database error in a fixture")


async def _capture(engine, statement):
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    except Exception as exc:  # the real driver exception, wrapped by SQLAlchemy
        return exc
    raise AssertionError(f"no error from {statement}")


async def _provoke(url):
    schema = "w_" + os.environ.get("PYTEST_XDIST_WORKER", "main")  # xdist workers must not race here
    admin = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://"))
    async with admin.begin() as conn:
        await conn.execute(text(f"CREATE SCHEMA {schema}"))
    await admin.dispose()
    engine = create_async_engine(
        url.replace("postgresql://", "postgresql+asyncpg://"),
        connect_args={"server_settings": {"search_path": schema}},
    )
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE workspaces (id int PRIMARY KEY)"))
        await conn.execute(text("CREATE TABLE members (ws int REFERENCES workspaces(id))"))
        await conn.execute(text("INSERT INTO workspaces VALUES (1)"))
        await conn.execute(text("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'"))
    errors = {
        "dependent": await _capture(engine, "DROP TABLE workspaces"),
        "unique": await _capture(engine, "INSERT INTO workspaces VALUES (1)"),
    }
    # Two sessions replacing one function: the second gets "tuple concurrently updated" (XX000).
    async with engine.connect() as first, engine.connect() as second:
        tx = await first.begin()
        await first.execute(text("CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 2'"))

        async def replace():
            async with second.begin():
                await second.execute(text("CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 3'"))

        task = asyncio.create_task(replace())
        await asyncio.sleep(0.3)
        await tx.commit()
        try:
            await task
        except Exception as exc:
            errors["concurrent"] = exc
    await engine.dispose()
    return errors


@pytest.fixture(scope="session")
def real_errors():
    return asyncio.run(_provoke(os.environ["DATABASE_URL"]))


@pytest.fixture(autouse=True)
def db(request, real_errors):
    marker = request.node.get_closest_marker("breaks")
    kind, phase = marker.args if marker else (None, None)
    if phase == "setup":
        raise real_errors[kind].with_traceback(None)
    yield
    if phase == "teardown":
        raise real_errors[kind].with_traceback(None)
"""


def _seed_module(n_tests: int, broken: dict[int, tuple[str, str]], failing: tuple[int, ...] = ()) -> str:
    lines = ["import pytest", ""]
    for i in range(n_tests):
        if i in broken:
            lines.append(f"@pytest.mark.breaks{broken[i]!r}")
        body = "    assert False, 'expected 200, got 403'" if i in failing else "    pass"
        lines += [f"def test_case_{i}():", body, "", ""]
    return "\n".join(lines)


SEED_SUITE = {
    "conftest.py": SEED_CONFTEST,
    # 11 of 16 isolation tests error in fixtures: 6 at setup (DDL race), 5 at teardown (DROP blocked)
    "tests/test_workspace_isolation.py": _seed_module(
        16,
        {
            **{i: ("concurrent", "setup") for i in range(6)},
            **{i: ("dependent", "teardown") for i in range(6, 11)},
        },
    ),
    # 7 of 18 CSRF tests error at setup: shared rows
    "tests/test_csrf_protection.py": _seed_module(18, {i: ("unique", "setup") for i in range(7)}),
    "tests/test_auth_endpoints.py": _seed_module(12, {}, failing=(3,)),
    "tests/test_encryption.py": _seed_module(6, {i: ("concurrent", "setup") for i in range(2)}),
}

SEED_PYPROJECT = {
    "budgets": {
        "suite": "2m",
        "average-test": "1s",
        "categories": {"workspace_isolation": "10s", "encryption": "5s"},
    }
}


@pytest.fixture(scope="module")
def seed_report(tmp_path_factory, pg_server):
    folder = tmp_path_factory.mktemp("seed")
    junit = run_pytest(
        folder, SEED_SUITE, "-n", "2", junit="shard-1-run-1.xml", env={"DATABASE_URL": pg_server.url()}
    )
    config = resolve_report_config({}, {}, SEED_PYPROJECT)
    return build_report([parse_junit_file(junit, "shard-1-run-1.xml")], config)


def test_seed_story_counts_per_category(seed_report):
    cats = {c.name: c for c in seed_report.categories}
    iso, csrf = cats["workspace_isolation"], cats["csrf_protection"]
    assert (iso.tests, iso.setup_errors + iso.teardown_errors, iso.setup_errors, iso.passed) == (16, 11, 6, 5)
    assert (csrf.tests, csrf.setup_errors, csrf.teardown_errors, csrf.passed) == (18, 7, 0, 11)
    assert (cats["auth_endpoints"].tests, cats["auth_endpoints"].failed) == (12, 1)
    assert (cats["encryption"].tests, cats["encryption"].setup_errors) == (6, 2)
    assert seed_report.totals.tests == 52


def test_seed_story_root_causes(seed_report):
    causes = {g.cause.key: g for g in seed_report.causes}
    assert set(causes) == {"concurrent-ddl", "unique-violation", "dependent-objects", "other"}
    assert causes["concurrent-ddl"].tests == 8
    assert causes["concurrent-ddl"].categories == ("encryption", "workspace_isolation")
    assert (causes["unique-violation"].tests, causes["unique-violation"].details) == (7, ("workspaces_pkey",))
    assert (causes["dependent-objects"].tests, causes["dependent-objects"].details) == (
        5,
        ("table workspaces",),
    )
    assert seed_report.causes[0].cause.key == "concurrent-ddl"  # most tests first
    assert seed_report.causes[-1].cause.key == "other"
    assert "tuple concurrently updated" in causes["concurrent-ddl"].example_message


def test_seed_story_budgets_are_expressible_and_checked(seed_report):
    keys = [b.key for b in seed_report.budgets]
    assert keys == ["suite", "average-test", "categories.workspace_isolation", "categories.encryption"]
    assert all(b.status.value == "ok" for b in seed_report.budgets)
    assert seed_report.verdict.value == "failed" and not seed_report.is_green


def test_group_causes_counts_each_test_once_per_cause(seed_report):
    flaky_free = [t for t in seed_report.tests if t.status is not Status.FLAKY]
    assert sum(g.tests for g in group_causes(flaky_free)) == len(seed_report.tests)


def test_default_config_has_no_budgets():
    assert ReportConfig().budgets.suite_s is None


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("AssertionError: assert 40001 == 200", "other"),
        ("KeyError: 57014", "other"),
        ("assert response.json()['id'] == 23505", "other"),
        ("psycopg.errors.lookup: SQLSTATE 23505", "unique-violation"),
        ("pgcode='40001' serialization", "serialization"),
        ("ERROR [57014] canceling statement", "timeout"),
    ],
)
def test_numeric_sqlstates_count_only_where_they_read_as_one(message, expected):
    assert classify_failure(message).key == expected
