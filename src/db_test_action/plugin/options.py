"""The `--db-*` options and the two hooks that decide whether `--db-per-worker` is on: the light half.

pytest loads the `pytest11` entry point in every run of an environment that has the package, so this
module imports only pytest, the standard library and our settings table: psycopg, the launcher's helpers
and `pwd` (absent on Windows) load in `plugin.db` only once a database option is active. Settings resolve
through `config.resolve_plugin` (flag > ini > DB_TEST_ACTION_<KEY> > default), once per process, into a
frozen value in `config.stash` (see plugin.db.DbSettings).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from db_test_action.config.settings import resolve_plugin
from db_test_action.config.values import RESET_MODES
from db_test_action.errors import DbTestActionError
from db_test_action.plugin.sources import ini, option

__all__ = [
    "pytest_addoption_db_per_worker",
    "pytest_configure_db_per_worker",
    "pytest_load_initial_conftests_db_per_worker",
]

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
ENABLED_KEY = pytest.StashKey[bool]()


@pytest.hookimpl(specname="pytest_addoption")
def pytest_addoption_db_per_worker(parser: pytest.Parser) -> None:
    group = parser.getgroup("db-test-action")
    group.addoption(
        "--db-per-worker", action="store_true", default=None, dest="db_per_worker", help=PER_WORKER_HELP
    )
    group.addoption("--db-setup", dest="db_setup", metavar="SETUP", help=SETUP_HELP)
    group.addoption("--db-extensions", dest="db_extensions", metavar="NAMES", help=EXTENSIONS_HELP)
    group.addoption("--db-url-env", dest="db_url_env", metavar="NAME", help=URL_ENV_HELP)
    group.addoption("--db-reset-mode", dest="db_reset_mode", choices=RESET_MODES, help=RESET_MODE_HELP)
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


def is_enabled(config: pytest.Config) -> bool:
    """Whether `--db-per-worker` is on, decided once; the only setting read while the plugin is off."""
    if ENABLED_KEY not in config.stash:
        values = resolve_plugin(option(config), ini(config), os.environ, ("db-per-worker",))
        config.stash[ENABLED_KEY] = values["db_per_worker"]
    return config.stash[ENABLED_KEY]


@pytest.hookimpl(wrapper=True, specname="pytest_load_initial_conftests")
def pytest_load_initial_conftests_db_per_worker(early_config: pytest.Config) -> Iterator[None]:
    """Before the user's conftest.py is imported: set up and point the URL variable at our database."""
    ns = early_config.known_args_namespace
    if getattr(ns, "help", False) or getattr(ns, "version", False):
        return (yield)
    try:
        cleanup = _start(early_config) if is_enabled(early_config) else None
    except DbTestActionError as exc:
        raise pytest.UsageError(str(exc)) from None
    try:
        return (yield)
    except BaseException:
        if cleanup is not None:  # pytest skips unconfigure when conftest loading fails: clean up here
            cleanup()
        raise


@pytest.hookimpl(specname="pytest_configure")
def pytest_configure_db_per_worker(config: pytest.Config) -> None:
    """Late path, for the plugin being registered after the initial conftests (e.g. `-p` in a conftest)."""
    try:
        if is_enabled(config):
            _start(config)
    except DbTestActionError as exc:
        raise pytest.UsageError(str(exc)) from None


def _start(config: pytest.Config) -> Callable[[], None]:
    from db_test_action.plugin import db  # the heavy half: psycopg, the template and reset helpers

    return db.start_once(config)
