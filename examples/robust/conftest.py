"""The same tests as ../fragile, with the fixture fixes that make them safe under xdist and repeats:

- one database per xdist worker (created from DATABASE_URL's server), so workers share nothing;
- the schema (functions, tables, the extra audit table) created once per worker session, never dropped
  while tests run;
- each test inside a transaction that is rolled back, so nothing leaks into the next test;
- random workspace ids.
"""

import os
import uuid

import pytest
import pytest_asyncio
from app.db import async_url, create_schema, make_engine
from app.services import create_workspace
from pytest_asyncio import is_async_test
from sqlalchemy import text
from sqlalchemy.engine import make_url

AUDIT_DDL = """
CREATE TABLE IF NOT EXISTS workspace_audit (
    id bigserial PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id),
    action text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
)
"""


def pytest_generate_tests(metafunc):
    # EXAMPLES_SCALE=N runs every test N times (benchmarks/xdist_speedup.py): the suite itself takes well
    # under a second, less than xdist needs to start two workers.
    scale = int(os.environ.get("EXAMPLES_SCALE", "1"))
    if scale > 1 and "example_copy" in metafunc.fixturenames:
        metafunc.parametrize("example_copy", range(scale), indirect=True, ids=lambda i: f"copy{i}")


@pytest.fixture(autouse=True)
def example_copy(request):
    return getattr(request, "param", 0)


def pytest_collection_modifyitems(items):
    # Session-scoped async fixtures need the tests on the same (session) event loop.
    marker = pytest.mark.asyncio(loop_scope="session")
    for item in items:
        if is_async_test(item):
            item.add_marker(marker, append=False)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def worker_database_url():
    """FIX: a database of this worker's own, created from template1 (which holds pgcrypto) and dropped
    at the end; without xdist it is still a separate database, so runs never share state."""
    base = make_url(async_url(os.environ["DATABASE_URL"]))
    name = f"{base.database}_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"[:63]
    admin = make_engine(base.set(database="postgres").render_as_string(hide_password=False), pooled=False)
    async with admin.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def engine(worker_database_url):
    """FIX: one engine and one schema per worker session."""
    engine = make_engine(worker_database_url)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE EXTENSION IF NOT EXISTS pgcrypto"))
        await create_schema(conn)
        await conn.execute(text(AUDIT_DDL))
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def conn(engine):
    """FIX: every test runs in a transaction that is rolled back afterwards."""
    async with engine.connect() as conn:
        transaction = await conn.begin()
        try:
            yield conn
        finally:
            await transaction.rollback()


@pytest_asyncio.fixture(loop_scope="session")
async def workspace(conn):
    """FIX: a random id per test, inside the test's transaction."""
    return await create_workspace(conn, "Acme", uuid.uuid4())


@pytest_asyncio.fixture(loop_scope="session")
async def other_workspace(conn):
    return await create_workspace(conn, "Globex", uuid.uuid4())
