"""The fixtures as they were when the incident happened. Each ANTI-PATTERN is harmless alone and serially;
with two xdist workers on one database they collide (see ../README.md and ../robust/conftest.py).

`lockstep` only fixes *when* the two workers' steps run (see ../lockstep.py); the errors come from
PostgreSQL. Without xdist the suite is green. A step wraps its whole transaction, so the other worker's
next step starts only after the commit (the one exception is the first transaction's functions, which
the crypto scenario holds uncommitted on purpose).
"""

import contextlib
import uuid

import pytest
from app.db import install_functions, make_engine
from app.models import Base
from app.services import create_workspace
from lockstep import Lockstep, RoundRobinScheduling
from sqlalchemy import text

# ANTI-PATTERN: fixed ids, shared by every test (and by every worker on the same database).
ACME = uuid.UUID("00000000-0000-4000-8000-000000000001")
GLOBEX = uuid.UUID("00000000-0000-4000-8000-000000000002")

# A table from a migration that never made it into the models: it references workspaces, and
# metadata.drop_all does not know it exists.
AUDIT_DDL = """
CREATE TABLE IF NOT EXISTS workspace_audit (
    id bigserial PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id),
    action text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
)
"""

LOCKSTEP = Lockstep.from_env()


def _step(name, conn=None):
    return LOCKSTEP.step(name, conn) if LOCKSTEP else contextlib.nullcontext()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """The choreography pairs gw0's k-th test with gw1's k-th: hand the tests out the same way every time."""
    if getattr(config.option, "numprocesses", None) == 2:
        return RoundRobinScheduling(config, log)
    return None


def pytest_sessionfinish(session):
    if LOCKSTEP:
        LOCKSTEP.gone()


@pytest.fixture
async def engine():
    """ANTI-PATTERN: a new engine per test that re-creates the functions and tables in the shared database,
    and drops them again afterwards."""
    if LOCKSTEP:
        LOCKSTEP.begin()
    engine = make_engine(pooled=False)
    try:
        async with engine.begin() as conn:
            async with _step("replace_functions"):
                await install_functions(conn)  # CREATE OR REPLACE FUNCTION app_encrypt / app_decrypt
            async with _step("create_all", conn):
                await conn.run_sync(Base.metadata.create_all)
        async with _step("extra_table"), engine.begin() as conn:
            await conn.execute(text(AUDIT_DDL))
    except BaseException:
        if LOCKSTEP:
            LOCKSTEP.end()
        await engine.dispose()
        raise
    try:
        yield engine
        async with _step("drop_extra"), engine.begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS workspace_audit"))
        async with _step("drop_all"), engine.begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
    finally:
        if LOCKSTEP:
            LOCKSTEP.end()
        await engine.dispose()


@pytest.fixture
async def workspace(engine):
    """ANTI-PATTERN: inserts the same two workspace ids in every test."""
    async with _step("workspace"), engine.begin() as conn:
        await create_workspace(conn, "Acme", ACME)
        await create_workspace(conn, "Globex", GLOBEX)
    return ACME


@pytest.fixture
async def other_workspace(workspace):
    return GLOBEX


@pytest.fixture
async def conn(engine):
    """The test's connection; what a test writes is committed (and left for drop_all)."""
    async with engine.begin() as conn:
        yield conn
