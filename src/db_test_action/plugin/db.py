"""`--db-per-worker`: every pytest process (each xdist worker, or the one process) gets its own database.

Why: suites that run `create_all`/`drop_all`, `CREATE OR REPLACE FUNCTION` or fixed ids against one
shared database break under xdist (DependentObjectsStillExist, "tuple concurrently updated", duplicate
keys). Giving each worker a private clone of a template, set up once per session, removes the sharing
without changing a line of the suite.

Why `pytest_load_initial_conftests`: it runs before the user's conftest.py files are imported, so a
settings module that reads `DATABASE_URL` at import time already sees the worker's database. The
controller (or the single process) prepares the template there, before xdist starts any worker;
workers recognise the session through `DB_TEST_ACTION_DB_SESSION`, which they inherit.

This is the heavy half, imported by plugin.options only once `--db-per-worker`, ini `db_per_worker =
true` or the environment turned it on; until then no option has an effect, no connection is made and
no fixture is registered.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from db_test_action.config.settings import first_source, plugin_candidates, resolve_plugin, setting_for
from db_test_action.errors import DbTestActionError
from db_test_action.plugin.reset import Resetter
from db_test_action.plugin.sources import ini, option
from db_test_action.plugin.template import (
    Names,
    ResetMode,
    Setup,
    check_url,
    clone_database,
    drop_databases,
    ensure_template,
    parse_setup,
    session_databases,
    session_names,
    with_database,
)
from db_test_action.server.launch import redact

ENV_SESSION = "DB_TEST_ACTION_DB_SESSION"  # set by the owner for its xdist workers (JSON)
MAIN_WORKER = "main"  # the database name suffix of the controller / the only process


@dataclass(frozen=True, slots=True)
class DbSettings:
    """The resolved configuration; CLI > ini > environment > default, decided once per process."""

    is_enabled: bool = False
    setup: Setup | None = None
    extensions: tuple[str, ...] = ()
    url_env: str = "DATABASE_URL"
    reset_mode: ResetMode = ResetMode.TRUNCATE
    is_keep: bool = False


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What the owner hands its workers: the session id (in every name) and the server URL."""

    session_id: str
    owner_pid: int
    base_url: str

    def to_env(self, claimed_by: int | None = None) -> str:
        """The owner writes it unclaimed for its workers; a worker marks it claimed for its own process."""
        data = {"id": self.session_id, "owner_pid": self.owner_pid, "base_url": self.base_url}
        return json.dumps(data | ({"claimed_by": claimed_by} if claimed_by else {}))


@dataclass(frozen=True, slots=True)
class DbState:
    """This process's share of the session, kept in `config.stash`."""

    settings: DbSettings
    session: SessionInfo
    names: Names
    worker_id: str
    url: str  # the worker's database, in the user's URL form (driver and query kept)
    is_owner: bool
    did_setup: bool
    setup_s: float
    clone_s: float

    @property
    def database(self) -> str:
        return self.names.worker(self.worker_id)


SETTINGS_KEY = pytest.StashKey[DbSettings]()
STATE_KEY = pytest.StashKey[DbState]()
CLEANUP_KEY = pytest.StashKey["Cleanup"]()


def resolve_settings(
    cli: Callable[[str], object], ini: Callable[[str], object], env: Mapping[str, str], rootdir: Path
) -> DbSettings:
    """The plugin's settings from the one table (flag > ini > environment > default); bad values name
    where they came from (flag, ini key or variable)."""
    if not resolve_plugin(cli, ini, env, ("db-per-worker",))["db_per_worker"]:
        return DbSettings()  # off: nothing else is read, so a stray variable cannot break a plain run
    keys = ("db-extensions", "db-url-env", "db-reset-mode", "db-keep")
    values = resolve_plugin(cli, ini, env, keys)
    setup = None
    if got := first_source(plugin_candidates(cli, ini, env, setting_for("plugin", "db-setup"))):
        where, text = got
        try:
            setup = parse_setup(str(text), rootdir)
        except DbTestActionError as exc:
            raise DbTestActionError(str(exc).replace("--db-setup", where, 1)) from None
    return DbSettings(
        is_enabled=True,
        setup=setup,
        extensions=values["db_extensions"],
        url_env=values["db_url_env"],
        reset_mode=ResetMode(values["db_reset_mode"]),
        is_keep=values["db_keep"],
    )


def find_session(env: Mapping[str, str], parent_pid: int) -> tuple[SessionInfo, str] | None:
    """(session, worker id) when this process is an xdist worker of an owner that prepared a session.

    A pytest run *inside* a test must not mistake an inherited session for its own (it would clone
    over the worker's database): in a subprocess the parent is a worker, not the owner; in-process
    (pytester's `runpytest`) the worker has already marked the session as claimed.
    """
    worker = env.get("PYTEST_XDIST_WORKER")
    raw = env.get(ENV_SESSION)
    if not worker or not raw:
        return None
    try:
        data = json.loads(raw)
        session = SessionInfo(str(data["id"]), int(data["owner_pid"]), str(data["base_url"]))
    except (ValueError, KeyError, TypeError):
        return None
    if session.owner_pid != parent_pid or data.get("claimed_by"):
        return None
    return session, worker


def start_once(config: pytest.Config) -> Cleanup:
    """Resolve the settings and start, once per process (the early and the late hook may both ask)."""
    if CLEANUP_KEY not in config.stash:
        settings = resolve_settings(option(config), ini(config), os.environ, config.rootpath)
        config.stash[SETTINGS_KEY] = settings
        start(config, settings)
    return config.stash[CLEANUP_KEY]


def start(config: pytest.Config, settings: DbSettings) -> DbState:
    """Prepare (owner) or find (worker) the template, clone this process's database, point the URL at it."""
    found = find_session(os.environ, os.getppid())
    if found:
        session, worker_id = found
    else:
        base_url = check_url(os.environ.get(settings.url_env), settings.url_env)
        session, worker_id = SessionInfo(secrets.token_hex(4), os.getpid(), base_url), MAIN_WORKER
    names = session_names(session.base_url, session.session_id)
    started = time.perf_counter()
    try:
        did_setup = ensure_template(
            session.base_url,
            names,
            settings.setup,
            settings.extensions,
            env_name=settings.url_env,
            cwd=config.rootpath,
        )
        cloned = time.perf_counter()
        clone_database(session.base_url, names.template, names.worker(worker_id))
    except BaseException:
        if not found:
            with contextlib.suppress(DbTestActionError):
                drop_databases(session.base_url, session_databases(session.base_url, names))
        raise
    state = DbState(
        settings=settings,
        session=session,
        names=names,
        worker_id=worker_id,
        url=with_database(session.base_url, names.worker(worker_id)),
        is_owner=not found,
        did_setup=did_setup,
        setup_s=cloned - started,
        clone_s=time.perf_counter() - cloned,
    )
    config.stash[STATE_KEY] = state
    config.stash[CLEANUP_KEY] = cleanup = Cleanup(
        state, {n: os.environ.get(n) for n in (settings.url_env, ENV_SESSION)}
    )
    config.add_cleanup(cleanup)
    os.environ[settings.url_env] = state.url
    os.environ[ENV_SESSION] = session.to_env(claimed_by=None if state.is_owner else os.getpid())
    config.pluginmanager.register(DbPerWorker(state), DbPerWorker.NAME)
    return state


class Cleanup:
    """Runs once (at unconfigure, or early when conftest loading fails): restore env, drop databases."""

    def __init__(self, state: DbState, saved_env: Mapping[str, str | None]) -> None:
        self.state = state
        self.saved_env = dict(saved_env)
        self.is_done = False

    def __call__(self) -> None:
        if self.is_done:
            return
        self.is_done = True
        for name, value in self.saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        state = self.state
        if state.settings.is_keep:
            return
        try:
            drop_databases(state.session.base_url, [state.database])
            if state.is_owner:  # after xdist stopped the workers: anything left is a crashed worker's
                drop_databases(state.session.base_url, session_databases(state.session.base_url, state.names))
        except DbTestActionError as exc:
            warnings.warn(f"db-per-worker cleanup: {exc}", stacklevel=1)


class DbPerWorker:
    """Fixtures and reporting, registered only when `--db-per-worker` is on."""

    NAME = "db_test_action_db_per_worker"

    def __init__(self, state: DbState) -> None:
        self.state = state

    def pytest_report_header(self, config: pytest.Config) -> str:
        s = self.state
        setup = repr(s.settings.setup.text) if s.settings.setup else "none"
        return (
            f"db-per-worker: {s.settings.url_env}={redact(s.url)} (template {s.names.template}, "
            f"setup {setup}: {s.setup_s:.2f}s, clone {s.clone_s:.3f}s)"
        )

    @pytest.fixture(scope="session")
    def db_url(self) -> str:
        """URL of this worker's own database (also in DATABASE_URL), in the same form as the original URL.

        Each xdist worker gets a different one, cloned from the template the setup prepared; use it to
        build engines in fixtures instead of reading a module-level setting.
        """
        return self.state.url

    @pytest.fixture(scope="session")
    def _db_resetter(self) -> Iterator[Resetter]:
        resetter = Resetter(self.state.session.base_url, self.state.names.template, self.state.database)
        yield resetter
        resetter.close()

    @pytest.fixture
    def db_reset(self, _db_resetter: Resetter) -> None:
        """Restore this worker's database to the template's state before the test (opt-in).

        `truncate` mode (default) empties every table in one statement and re-inserts the rows the
        setup left (alembic_version, reference data); schema changes a test made stay. `clone` mode
        drops and re-clones the database, undoing everything but closing every open connection.
        """
        try:
            if self.state.settings.reset_mode is ResetMode.CLONE:
                _db_resetter.reclone()
            else:
                _db_resetter.truncate()
        except DbTestActionError as exc:
            pytest.fail(str(exc), pytrace=False)
