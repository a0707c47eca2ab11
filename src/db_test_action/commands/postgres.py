"""`db-test-action postgres start|stop|status|url` and `postgres -- CMD ARGS…`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from db_test_action.commands.files import load_table
from db_test_action.config.settings import resolve
from db_test_action.errors import EXIT_ENV, EXIT_USAGE, DbTestActionError
from db_test_action.publish import gha
from db_test_action.server.info import SUPERUSER, parse_url_driver, parse_url_envs
from db_test_action.server.install import NO_INSTALL, ensure_server
from db_test_action.server.launch import (
    LaunchOptions,
    LocalServer,
    ServerInfo,
    redact,
    signals_as_exit,
    use_external,
)
from db_test_action.server.procs import die_with_parent
from db_test_action.server.state import (
    default_state_file,
    is_running,
    read_state,
    state_lock,
    stop_detached,
    write_state,
)

HELP = """\
start    start a server in the background, write a state file, print the variables
stop     stop the server named by the state file and remove its data dir
status   say whether it runs (exit 0) or not (exit 3)
url      print its DATABASE_URL
bin      print the server bin dir that would be used (exit 3 when none: install postgresql)
install  install the server packages with apt when missing (PGDG repository for other majors), print the bin dir
-- CMD   start a server, run CMD with DATABASE_URL/PG* set, stop it, exit with CMD's status"""


GENERATED_PASSWORD = ":generated:"  # `--password` without a value: a generated password
LAUNCH_KEYS = ("database_url", "user", "password", "port", "database", "locale", "server_settings",
               "url_driver", "db_url_env", "no_install")  # fmt: skip
RUN_KEYS = ("python", "plugin_path", "db_per_worker", "db_setup")


def split_list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.replace(" ", ",").split(",") if part.strip())


def add_launch_options(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every command that may start a server (postgres, run, the action)."""
    group = parser.add_argument_group("postgres server")
    group.add_argument(
        "--pg-bin", metavar="DIR", help="server bin dir (default: PG_BIN, pg_config, newest found)"
    )
    group.add_argument("--postgres-version", type=int, metavar="N", help="major version to use, e.g. 16")
    group.add_argument(
        "--database",
        help="database to create (default: test; with `run`: every run's database gets this name)",
    )
    group.add_argument(
        "--extensions",
        default="pgcrypto",
        type=split_list,
        help="comma-separated extensions, installed in template1 too (default: pgcrypto; '' for none)",
    )
    group.add_argument("--max-connections", type=int, default=300, metavar="N", help="(default: %(default)s)")
    group.add_argument(
        "--password",
        nargs="?",
        const=GENERATED_PASSWORD,
        metavar="PW",
        help="require this password on TCP (no value: a generated one); for a conftest that hard-codes it",
    )
    group.add_argument(
        "--user",
        help=f"the role the suite connects as, created as the cluster's superuser (default: {SUPERUSER})",
    )
    group.add_argument("--port", metavar="N", help="(default: a free port)")
    group.add_argument(
        "--locale",
        help="the cluster's locale, e.g. en_US.UTF-8 (ORDER BY on text follows it; default: C.UTF-8)",
    )
    group.add_argument(
        "--server-settings",
        metavar="LINES",
        help="server settings, newline-separated name=value lines, each passed as `-c name=value`",
    )
    group.add_argument(
        "--url-driver",
        metavar="DRIVER",
        help="scheme of DATABASE_URL: asyncpg, psycopg, psycopg2 or a literal one (postgresql+asyncpg)",
    )
    group.add_argument(
        "--db-url-env",
        metavar="NAMES",
        help="more variables that get the database URL, comma-separated (the plugin uses the first)",
    )
    group.add_argument(
        "--no-install",
        action="store_true",
        default=None,
        help=f"never apt-get install the server when it is missing (also {NO_INSTALL.env}=1)",
    )
    group.add_argument(
        "--data-root",
        metavar="DIR",
        help="where the temp data dir goes (default: /dev/shm if it has 1 GiB free, else the temp dir)",
    )
    group.add_argument(
        "--database-url",
        metavar="URL",
        help="use this existing server instead of starting one (e.g. a services: postgres container)",
    )


_SETTING_NAME = re.compile(r"^[a-z_][a-z0-9_.]*$")


def parse_server_settings(text: str) -> tuple[tuple[str, str], ...]:
    """`max_locks_per_transaction=256` lines (or commas) → pairs; a bad line is a one-line error."""
    pairs = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip().lower()
        if not sep or not _SETTING_NAME.match(name):
            raise DbTestActionError(
                f"--server-settings: {line!r} is not name=value; write e.g. max_locks_per_transaction=256",
                EXIT_USAGE,
            )
        pairs.append((name, value.strip().strip("'\"")))
    return tuple(pairs)


def resolve_launch_settings(args: argparse.Namespace, command: str) -> None:
    """Flag > DB_TEST_ACTION_<KEY> > [tool.db-test-action] > default for the server and URL settings,
    resolved when the command runs (not at parser build); the action passes its inputs as the variables."""
    table, where = load_table(None, Path.cwd())
    resolved = resolve(command, vars(args), os.environ, table, where)
    for key in LAUNCH_KEYS + (RUN_KEYS if command == "run" else ()):
        setattr(args, key, resolved[key])


def launch_options(args: argparse.Namespace) -> LaunchOptions:
    if args.max_connections < 5:
        raise DbTestActionError("--max-connections: must be at least 5; give 5 or more", EXIT_USAGE)
    return LaunchOptions(
        pg_bin=args.pg_bin,
        version=args.postgres_version,
        database=args.database or "test",
        extensions=args.extensions,
        max_connections=args.max_connections,
        use_password=args.password is not None,
        password=None if args.password in (None, GENERATED_PASSWORD) else args.password,
        data_root=args.data_root,
        settings=parse_server_settings(args.server_settings),
        locale=args.locale,
        port=args.port,
        user=args.user,
        no_install=args.no_install,
    )


def suite_url_options(args: argparse.Namespace, info: ServerInfo) -> ServerInfo:
    """The server as the suite expects to see it: --url-driver and --db-url-env applied."""
    return dataclasses.replace(
        info,
        url_driver=parse_url_driver(args.url_driver) or info.url_driver,
        url_envs=parse_url_envs(args.db_url_env) or tuple(info.url_envs),
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "postgres",
        help="start/stop a throwaway PostgreSQL with pgcrypto, or run a command against one",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="db-test-action postgres {start,stop,status,url,bin,install} [options] | postgres [options] -- CMD ARGS…",
    )
    parser.add_argument(
        "action",
        nargs="?",
        choices=["start", "stop", "status", "url", "bin", "install"],
        help=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--name", default="default", help="names the state file, to run several (default: %(default)s)"
    )
    parser.add_argument("--state-file", type=Path, metavar="F", help="explicit state file path")
    add_launch_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    resolve_launch_settings(args, "postgres")
    state = args.state_file or default_state_file(args.name)
    if args.passthrough:
        if args.action:
            raise DbTestActionError(
                f"postgres {args.action}: takes no command after `--`; use `postgres -- CMD` without an action",
                EXIT_USAGE,
            )
        return run_with_server(args, args.passthrough)
    if args.action is None:
        raise DbTestActionError(
            "postgres: no action given; say start, stop, status or url, or give `-- CMD`", EXIT_USAGE
        )
    if args.action == "start":
        return start(args, state)
    if args.action == "bin":
        print(ensure_server(args.pg_bin, args.postgres_version, no_install=True))
        return 0
    if args.action == "install":
        print(ensure_server(args.pg_bin, args.postgres_version, no_install=False))
        return 0
    if args.action == "stop":
        info = stop_detached(state)
        print(f"stopped {info.host}:{info.port}" + (f", removed {info.data_dir}" if info.data_dir else ""))
        return 0
    info = read_state(state)
    if args.action == "url":
        print(info.suite_url())
        return 0
    running = info.data_dir is None or is_running(info)  # external servers: the state just records the URL
    print(f"{'running' if running else 'not running'}: {redact(info.url())} (pid {info.pid}, state {state})")
    return 0 if running else EXIT_ENV


def _export(info: ServerInfo) -> None:
    if info.password and os.environ.get("GITHUB_ACTIONS"):
        print(gha.mask(info.password))  # before the lines below that contain it
    values = info.env()
    gha.export_env(values)
    gha.set_outputs({"database-url": values["DATABASE_URL"]})
    for key, value in values.items():
        print(f"{key}={value}")


def start(args: argparse.Namespace, state: Path) -> int:
    """Start a detached server. Under the name's lock; SIGTERM/SIGHUP/SIGINT at any point stop what was
    started; the server is handed over (reaper disarmed) only once its state file is written."""
    with signals_as_exit(), state_lock(state):
        if os.path.lexists(state):
            old = read_state(state)
            if old.data_dir is None or is_running(old):
                raise DbTestActionError(
                    f"{state}: a server is already recorded here ({redact(old.url())}); "
                    "stop it first or pass another --name",
                    EXIT_USAGE,
                )
        if args.database_url:
            info = suite_url_options(args, use_external(args.database_url, args.extensions))
            write_state(state, info)
        else:
            server = LocalServer(dataclasses.replace(launch_options(args), detached=True))
            info = suite_url_options(args, server.start())
            try:
                write_state(state, info)
            except BaseException:
                server.stop()  # no state file, no way to stop it later: never leave it running
                raise
            server.detach()
    _export(info)
    return 0


def run_with_server(args: argparse.Namespace, cmd: list[str]) -> int:
    server = None if args.database_url else LocalServer(launch_options(args))
    with signals_as_exit():
        try:
            info = use_external(args.database_url, args.extensions) if server is None else server.start()
            env = {**os.environ, **suite_url_options(args, info).env()}
            try:
                # CMD gets SIGTERM if we die (even by SIGKILL): it must not run on against a reaped server.
                child = subprocess.Popen(cmd, env=env, preexec_fn=die_with_parent(signal.SIGTERM))
            except OSError as exc:
                raise DbTestActionError(
                    f"postgres -- {cmd[0]}: cannot run ({exc.strerror}); check the command name and PATH",
                    EXIT_USAGE,
                ) from None
            return _wait_forwarding(child)
        finally:
            if server is not None:
                server.stop()


def _wait_forwarding(child: subprocess.Popen[bytes]) -> int:
    """Wait for CMD, passing SIGINT/SIGTERM/SIGHUP on to it so it can clean up before we stop the server."""

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, forward) for sig in sigs}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.stdout.flush()
    return 128 - code if code < 0 else code
