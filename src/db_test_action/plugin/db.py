"""`--db-per-worker`: every pytest process (each xdist worker, or the one process) gets its own database.

Why: suites that run `create_all`/`drop_all`, `CREATE OR REPLACE FUNCTION` or fixed ids against one
shared database break under xdist (DependentObjectsStillExist, "tuple concurrently updated", duplicate
keys). Giving each worker a private clone of a template, set up once per session, removes the sharing
without changing a line of the suite.

Why `pytest_load_initial_conftests`: it runs before the user's conftest.py files are imported, so a
settings module that reads `DATABASE_URL` at import time already sees the worker's database. The
controller (or the single process) prepares the template there, before xdist starts any worker;
workers recognise the session through `DB_TEST_ACTION_DB_SESSION`, which they inherit.

Everything is inert unless `--db-per-worker`, ini `db_per_worker = true` or the environment turns it
on: no option has an effect, no connection is made, no fixture is registered. The hook functions have
unique names (pluggy's `specname`) because `db_test_action.plugin` star-imports several modules.
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

from db_test_action.errors import DbTestActionError
from db_test_action.plugin.reset import Resetter
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
from db_test_action.server.info import redact

__all__ = [
    "pytest_addoption_db_per_worker",
    "pytest_configure_db_per_worker",
    "pytest_load_initial_conftests_db_per_worker",
]

ENV_PREFIX = "DB_TEST_ACTION_"  # + the ini key in upper case: DB_TEST_ACTION_DB_PER_WORKER, …
ENV_SESSION = "DB_TEST_ACTION_DB_SESSION"  # set by the owner for its xdist workers (JSON)
MAIN_WORKER = "main"  # the database name suffix of the controller / the only process

# Help texts are shared by each option and its ini key (the way pytest-rerunfailures does it).
PER_WORKER_HELP = "Give each xdist worker its own database cloned from a template (default: off)."
SETUP_HELP = (
    "Schema setup run once into the template: a command ('alembic upgrade head'), a callable "
    "('pkg.module:function', sync or async, given the URL) or .sql files/directories, comma-separated. "
    "Paths and the command's cwd are relative to the rootdir."
)
EXTENSIONS_HELP = "Extensions to create in the template, comma-separated (e.g. 'pgcrypto,citext')."
URL_ENV_HELP = (
    "Environment variable holding the server URL and receiving the worker's URL (default: DATABASE_URL)."
)
RESET_MODE_HELP = (
    "How the db_reset fixture restores a clean database: 'truncate' (one TRUNCATE of every table, "
    "then the rows the setup inserted) or 'clone' (drop and re-clone; closes open connections). Default: truncate."
)
KEEP_HELP = "Keep the template and worker databases after the run, for debugging (default: off)."


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


INI_HINTS = {
    "db_per_worker": "use true or false",
    "db_keep": "use true or false",
    "db_extensions": "use a list of extension names",
}

SETTINGS_KEY = pytest.StashKey[DbSettings]()
STATE_KEY = pytest.StashKey[DbState]()
CLEANUP_KEY = pytest.StashKey["Cleanup"]()


@pytest.hookimpl(specname="pytest_addoption")
def pytest_addoption_db_per_worker(parser: pytest.Parser) -> None:
    group = parser.getgroup("db-test-action")
    group.addoption(
        "--db-per-worker", action="store_true", default=None, dest="db_per_worker", help=PER_WORKER_HELP
    )
    group.addoption("--db-setup", dest="db_setup", metavar="SETUP", help=SETUP_HELP)
    group.addoption("--db-extensions", dest="db_extensions", metavar="NAMES", help=EXTENSIONS_HELP)
    group.addoption("--db-url-env", dest="db_url_env", metavar="NAME", help=URL_ENV_HELP)
    group.addoption(
        "--db-reset-mode", dest="db_reset_mode", choices=[m.value for m in ResetMode], help=RESET_MODE_HELP
    )
    group.addoption("--db-keep", action="store_true", default=None, dest="db_keep", help=KEEP_HELP)
    # default=None means unset, so the environment can apply. Typed keys accept native TOML values
    # (`db_per_worker = true`, `db_extensions = ["pgcrypto"]`) under [tool.pytest] as well as ini strings.
    for key, help_text, ini_type in (
        ("db_per_worker", PER_WORKER_HELP, "bool"),
        ("db_setup", SETUP_HELP, "string"),
        ("db_extensions", EXTENSIONS_HELP, "args"),
        ("db_url_env", URL_ENV_HELP, "string"),
        ("db_reset_mode", RESET_MODE_HELP, "string"),
        ("db_keep", KEEP_HELP, "bool"),
    ):
        parser.addini(key, help_text, type=ini_type, default=None)


def _parse_bool(where: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise DbTestActionError(f"{where}: {text!r} is not a boolean; use true or false")


def _ini_text(value: object) -> str:
    """An ini value as text: bools from `type="bool"`, lists from `type="args"` or TOML arrays."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)


def resolve_settings(
    cli: Callable[[str], object], ini: Callable[[str], object], env: Mapping[str, str], rootdir: Path
) -> DbSettings:
    """Merge the three sources; a bad value raises naming where it came from (flag, ini key or variable)."""

    def pick(key: str) -> tuple[str, str] | None:
        value = cli(key)
        if value is not None:
            return "--" + key.replace("_", "-"), str(value)
        try:
            text = _ini_text(ini(key))
        except (TypeError, ValueError) as exc:  # pytest's own type checks (e.g. `db_per_worker = maybe`)
            detail = str(exc).split(": config option ", 1)[-1]
            hint = INI_HINTS.get(key, "use a string")
            raise DbTestActionError(f"{key} (ini): {detail}; {hint}") from None
        if text.strip():
            return f"{key} (ini)", text
        name = ENV_PREFIX + key.upper()
        if env.get(name, "").strip():
            return name, env[name]
        return None

    def flag(key: str) -> bool:
        got = pick(key)
        return _parse_bool(*got) if got else False

    if not flag("db_per_worker"):
        return DbSettings()
    setup = None
    if got := pick("db_setup"):
        where, text = got
        try:
            setup = parse_setup(text, rootdir)
        except DbTestActionError as exc:
            raise DbTestActionError(str(exc).replace("--db-setup", where, 1)) from None
    extensions: tuple[str, ...] = ()
    if got := pick("db_extensions"):
        extensions = tuple(n for n in got[1].replace(",", " ").split() if n)
    url_env = "DATABASE_URL"
    if got := pick("db_url_env"):
        url_env = got[1].strip()
        if not url_env.replace("_", "").isalnum():
            raise DbTestActionError(f"{got[0]}: {url_env!r} is not an environment variable name")
    reset_mode = ResetMode.TRUNCATE
    if got := pick("db_reset_mode"):
        try:
            reset_mode = ResetMode(got[1].strip().lower())
        except ValueError:
            raise DbTestActionError(
                f"{got[0]}: {got[1]!r} is not a reset mode; use truncate or clone"
            ) from None
    return DbSettings(True, setup, extensions, url_env, reset_mode, flag("db_keep"))


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


def _option(config: pytest.Config, key: str) -> object:
    """A command-line value; before the conftests load only `known_args_namespace` is filled in."""
    value = config.getoption(key, None)
    return getattr(config.known_args_namespace, key, None) if value is None else value


def _settings(config: pytest.Config) -> DbSettings:
    if SETTINGS_KEY not in config.stash:
        config.stash[SETTINGS_KEY] = resolve_settings(
            lambda key: _option(config, key), config.getini, os.environ, config.rootpath
        )
    return config.stash[SETTINGS_KEY]


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


@pytest.hookimpl(wrapper=True, specname="pytest_load_initial_conftests")
def pytest_load_initial_conftests_db_per_worker(early_config: pytest.Config) -> Iterator[None]:
    """Before the user's conftest.py is imported: set up and point the URL variable at our database."""
    ns = early_config.known_args_namespace
    if getattr(ns, "help", False) or getattr(ns, "version", False):
        return (yield)
    try:
        settings = _settings(early_config)
        state = start(early_config, settings) if settings.is_enabled else None
    except DbTestActionError as exc:
        raise pytest.UsageError(str(exc)) from None
    try:
        return (yield)
    except BaseException:
        if state is not None:  # pytest skips unconfigure when conftest loading fails: clean up here
            early_config.stash[CLEANUP_KEY]()
        raise


@pytest.hookimpl(specname="pytest_configure")
def pytest_configure_db_per_worker(config: pytest.Config) -> None:
    """Late path, for the plugin being registered after the initial conftests (e.g. `-p` in a conftest)."""
    if STATE_KEY in config.stash:
        return
    try:
        settings = _settings(config)
        if settings.is_enabled:
            start(config, settings)
    except DbTestActionError as exc:
        raise pytest.UsageError(str(exc)) from None


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
