"""`db-test-action postgres start|stop|status|url` and `postgres -- CMD ARGS…`."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from db_test_action.config.settings import resolve
from db_test_action.errors import EXIT_ENV, EXIT_USAGE, DbTestActionError
from db_test_action.publish import gha
from db_test_action.server.binaries import find_bin_dir
from db_test_action.server.launch import (
    LaunchOptions,
    LocalServer,
    ServerInfo,
    redact,
    signals_as_exit,
    use_external,
)
from db_test_action.server.state import default_state_file, is_running, read_state, stop_detached, write_state

HELP = """\
start    start a server in the background, write a state file, print the variables
stop     stop the server named by the state file and remove its data dir
status   say whether it runs (exit 0) or not (exit 3)
url      print its DATABASE_URL
bin      print the server bin dir that would be used (exit 3 when none: install postgresql)
-- CMD   start a server, run CMD with DATABASE_URL/PG* set, stop it, exit with CMD's status"""


def split_list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.replace(" ", ",").split(",") if part.strip())


def add_launch_options(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every command that may start a server (postgres, run, the action)."""
    group = parser.add_argument_group("postgres server")
    group.add_argument(
        "--pg-bin", metavar="DIR", help="server bin dir (default: PG_BIN, pg_config, newest found)"
    )
    group.add_argument("--postgres-version", type=int, metavar="N", help="major version to use, e.g. 16")
    group.add_argument("--database", default="test", help="database to create (default: %(default)s)")
    group.add_argument(
        "--extensions",
        default="pgcrypto",
        type=split_list,
        help="comma-separated extensions, installed in template1 too (default: pgcrypto; '' for none)",
    )
    group.add_argument("--max-connections", type=int, default=300, metavar="N", help="(default: %(default)s)")
    group.add_argument("--password", action="store_true", help="require a generated password on TCP")
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


def resolve_database_url(args: argparse.Namespace, command: str) -> None:
    """--database-url > DB_TEST_ACTION_DATABASE_URL, resolved when the command runs (not at parser build)."""
    args.database_url = resolve(command, vars(args), os.environ)["database_url"]


def launch_options(args: argparse.Namespace) -> LaunchOptions:
    if args.max_connections < 5:
        raise DbTestActionError("--max-connections: must be at least 5; give 5 or more", EXIT_USAGE)
    return LaunchOptions(
        pg_bin=args.pg_bin,
        version=args.postgres_version,
        database=args.database,
        extensions=args.extensions,
        max_connections=args.max_connections,
        use_password=args.password,
        data_root=args.data_root,
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "postgres",
        help="start/stop a throwaway PostgreSQL with pgcrypto, or run a command against one",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="db-test-action postgres {start,stop,status,url,bin} [options] | postgres [options] -- CMD ARGS…",
    )
    parser.add_argument(
        "action", nargs="?", choices=["start", "stop", "status", "url", "bin"], help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--name", default="default", help="names the state file, to run several (default: %(default)s)"
    )
    parser.add_argument("--state-file", type=Path, metavar="F", help="explicit state file path")
    add_launch_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    resolve_database_url(args, "postgres")
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
        print(find_bin_dir(args.pg_bin, args.postgres_version))
        return 0
    if args.action == "stop":
        info = stop_detached(state)
        print(f"stopped {info.host}:{info.port}" + (f", removed {info.data_dir}" if info.data_dir else ""))
        return 0
    info = read_state(state)
    if args.action == "url":
        print(info.url())
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
    if state.exists():
        old = read_state(state)
        if old.data_dir is None or is_running(old):
            raise DbTestActionError(
                f"{state}: a server is already recorded here ({redact(old.url())}); "
                "stop it first or pass another --name",
                EXIT_USAGE,
            )
    if args.database_url:
        info = use_external(args.database_url, args.extensions)
    else:
        info = LocalServer(launch_options(args)).start()  # detached: no stop(), `postgres stop` does it
    write_state(state, info)
    _export(info)
    return 0


def run_with_server(args: argparse.Namespace, cmd: list[str]) -> int:
    server = None if args.database_url else LocalServer(launch_options(args))
    with signals_as_exit():
        try:
            info = use_external(args.database_url, args.extensions) if server is None else server.start()
            env = {**os.environ, **info.env()}
            try:
                child = subprocess.Popen(cmd, env=env)
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
