"""Shared fixtures: one real PostgreSQL server per test session, started by our own launcher."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import error_format
import psycopg
import pytest
from psycopg import sql

from db_test_action.server.launch import LaunchOptions, LocalServer, ServerInfo

ROOT = Path(__file__).resolve().parent.parent

# Subprocesses that say `python` (a --db-setup command, a suite's own scripts) get the interpreter running
# the tests, as in an activated virtualenv, never whatever Python the machine has first on PATH.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


@pytest.fixture(scope="session")
def pg_server() -> Iterator[ServerInfo]:
    """A server for the whole session; tests that need isolation take `fresh_db`."""
    with LocalServer(LaunchOptions(database="test", extensions=("pgcrypto",))) as info:
        yield info


@pytest.fixture
def fresh_db(pg_server: ServerInfo) -> Iterator[str]:
    """A new database (pgcrypto inherited from template1) and its URL; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield pg_server.url(name)
    finally:
        with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def data_root() -> Iterator[Path]:
    """A data root the unprivileged server user can reach (pytest's tmp_path is 0700 under root)."""
    root = Path(tempfile.mkdtemp(prefix="dta-test-"))
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for CLI subprocesses: no GitHub env files leaking in from an outer run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "DB_TEST_ACTION_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def cli() -> list[str]:
    """`python -m db_test_action`, with the error-format recorder installed (see error_format.py)."""
    return list(error_format.CLI)


error_format.install(in_test_process=True)


@pytest.fixture(autouse=True)
def _error_messages_are_where_what_fix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every DbTestActionError this test's code built, here or in a CLI subprocess, has the one-line shape."""
    log = tmp_path_factory.getbasetemp() / f"errors-{uuid.uuid4().hex}.jsonl"
    os.environ[error_format.LOG_ENV] = str(log)
    error_format.take_recorded(None)
    yield
    os.environ.pop(error_format.LOG_ENV, None)
    bad = [(m, why) for m in error_format.take_recorded(log) if (why := error_format.shape_problem(m))]
    if bad:
        pytest.fail(
            "DbTestActionError messages not `<where>: <what>; <fix>`:\n"
            + "\n".join(f"  {why}: {m!r}" for m, why in bad),
            pytrace=False,
        )
