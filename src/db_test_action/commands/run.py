"""`db-test-action run`: the suite, sharded and repeated, each run on a fresh database.

db-test-action run [--shards N --shard I] [--repeat K] [--reruns R] [--workers W|auto]
                   [--durations F] [--results-dir D] [--database-url URL] [-- PYTEST ARGS…]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
import sys
import time
from pathlib import Path

from db_test_action.commands.postgres import (
    add_launch_options,
    launch_options,
    resolve_launch_settings,
    suite_url_options,
)
from db_test_action.config.settings import setting_for
from db_test_action.config.values import parse_duration
from db_test_action.errors import EXIT_GATE, EXIT_USAGE, DbTestActionError
from db_test_action.run.databases import Databases
from db_test_action.run.runner import (
    RunPlan,
    plugin_installed,
    run_shard,
    stop_on_signals,
    worse_exit,
)
from db_test_action.run.sharding import parse_durations
from db_test_action.server.info import parse_url_envs
from db_test_action.server.launch import LocalServer, ServerInfo, use_external
from db_test_action.server.log import LOG_STATEMENTS, copy_server_log
from db_test_action.server.state import default_state_file, read_state

DEFAULT_DURATIONS = ".test_durations"  # pytest-split's default file name

DESCRIPTION = """\
Runs pytest (your args after `--`) against a throwaway PostgreSQL: one fresh database per run, created
from a template that already holds the extensions, DATABASE_URL set, dropped afterwards. Writes
<results-dir>/shard-I-run-K.xml (JUnit with shard/run/attempt/worker properties), shard-I-run-K.log
and manifest.json (every node id and its shard).

exit codes: 0 all runs passed (or --no-fail), 1 tests failed or pytest crashed (the results file says
so), 2 bad arguments or pytest usage error (exit 4, which includes an import error in conftest),
3 Postgres unavailable; 1 also when --timeout stopped the suite (the results so far and a
server snapshot are kept); 128+N when stopped by signal N"""


def _positive(flag: str):  # type: ignore[no-untyped-def]
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag}: {value!r} is not a whole number") from None
        if number < 1:
            raise argparse.ArgumentTypeError(f"{flag}: must be at least 1, got {number}")
        return number

    return parse


def _shard(value: str) -> int:
    """1..N, or `all` (0): every shard in turn in this process, for a local run of the whole matrix."""
    if value == "all":
        return 0
    return _positive("--shard")(value)


def _limit(flag: str):  # type: ignore[no-untyped-def]
    """A time limit: 600, "90s", "10m"; "" or 0 means none (so an empty action input turns it off)."""

    def parse(value: str) -> float | None:
        if not value.strip():
            return None
        try:
            seconds = parse_duration(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f'{flag}: {value!r} is not a duration; use 600, "90s" or "10m"'
            ) from None
        if not math.isfinite(seconds):
            raise argparse.ArgumentTypeError(f"{flag}: {value!r} is not a finite duration")
        return seconds or None

    return parse


def _workers(value: str) -> str:
    if value == "auto" or value == "logical" or (value.isdigit() and int(value) >= 1):
        return value
    raise argparse.ArgumentTypeError(f"--workers: {value!r} is not a number >= 1 or 'auto'")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "run",
        help="run pytest sharded/repeated, each run on a fresh database, JUnit per run",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="db-test-action run [options] [-- PYTEST ARGS…]",
    )
    group = parser.add_argument_group("runs")
    group.add_argument(
        "--shards", type=_positive("--shards"), default=1, metavar="N", help="split into N shards"
    )
    group.add_argument(
        "--shard", type=_shard, default=1, metavar="I", help="run shard I (1..N), or all of them in turn: all"
    )
    group.add_argument(
        "--repeat", type=_positive("--repeat"), default=1, metavar="K", help="K whole sessions"
    )
    group.add_argument(
        "--until-failure", action="store_true", help="stop repeating after the first failing run"
    )
    group.add_argument(
        "--reruns", type=int, default=0, metavar="R", help="rerun failures R times (rerunfailures)"
    )
    group.add_argument("--workers", type=_workers, metavar="W", help="xdist workers: a number or auto")
    group.add_argument(
        "--durations",
        type=Path,
        metavar="F",
        help=f"pytest-split durations file for the split (default: {DEFAULT_DURATIONS} if present)",
    )
    group.add_argument(
        "--results-dir", type=Path, default=Path("test-results"), metavar="D", help="(default: %(default)s)"
    )
    group.add_argument("--no-fail", action="store_true", help="exit 0 when tests fail (crashes still fail)")
    group.add_argument(
        "--no-group-scopes", action="store_true", help="split test by test, ignoring module/class scopes"
    )
    group.add_argument(
        "--timeout",
        type=_limit("--timeout"),
        metavar="DURATION",
        help="suite time limit for this invocation (600, 90s, 10m): at the limit the server's sessions and "
        "locks are snapshotted (shard-I-run-K.hang.json), pytest is stopped (SIGINT, then SIGKILL) and the "
        "results so far are kept; set it below the job's timeout-minutes",
    )
    group.add_argument(
        "--test-timeout",
        type=_limit("--test-timeout"),
        metavar="DURATION",
        help="per-test limit, passed to pytest-timeout as --timeout; the server is snapshotted before the "
        "test is failed",
    )
    group.add_argument(
        "--stop-grace",
        type=_limit("--stop-grace"),
        default=30.0,
        metavar="DURATION",
        help="at --timeout, how long pytest gets after SIGINT (to run teardown and write its JUnit) "
        "before SIGKILL (default: 30s)",
    )
    group.add_argument(
        "--pytest-output",
        choices=("auto", "show", "hide"),
        default="auto",
        help="stream pytest's output too (show), or not (hide; auto = hide): it is always in "
        "shard-I-run-K.log, whose path each run's line prints",
    )
    group.add_argument(
        "--pytest-args",
        default="",
        metavar="STR",
        help="more pytest arguments as one shell-quoted string (split with shlex, never run by a shell); "
        "for the action's pytest-args input",
    )
    group.add_argument(
        "--server-state",
        metavar="NAME|FILE",
        help="use the server `db-test-action postgres start --name NAME` started (its log is captured too)",
    )
    group.add_argument(
        "--log-statements",
        choices=LOG_STATEMENTS,
        default="mod",
        help="what the server log records besides errors: DDL and data-modifying statements with their "
        "parameters, and connections (mod, the default: collision partners, the fixture doctor), DDL only, "
        "or none",
    )
    group.add_argument(
        "--no-server-log",
        action="store_true",
        help="do not capture the server's log (server-shard-I.jsonl, the report's server evidence)",
    )
    group.add_argument(
        "--python",
        metavar="EXE",
        help="the project's Python, which runs pytest (default: the one running this tool)",
    )
    group.add_argument(
        "--db-per-worker",
        action="store_true",
        default=None,
        help="each xdist worker its own database cloned from a template (the plugin's --db-per-worker)",
    )
    group.add_argument(
        "--db-setup",
        metavar="SETUP",
        help="schema setup run once into the template: a command, pkg.mod:func or .sql files (with --db-per-worker)",
    )
    group.add_argument(
        "--plugin-path",
        metavar="DIR",
        help="load the pytest plugin from DIR (PYTHONPATH) when the project's Python does not have it "
        "installed; how the action keeps the tool out of the project's environment",
    )
    add_launch_options(parser)
    parser.set_defaults(handler=run)


def _plugin_env(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """What the plugin inside pytest reads (it takes settings from DB_TEST_ACTION_<INI KEY>)."""
    env: dict[str, str] = {}
    if args.db_setup and not args.db_per_worker:
        raise DbTestActionError("--db-setup: runs into the per-worker template; add --db-per-worker")
    if args.db_per_worker:
        env[setting_for("plugin", "db-per-worker").env] = "true"
        if args.db_setup:
            env[setting_for("plugin", "db-setup").env] = args.db_setup
    names = parse_url_envs(args.db_url_env)
    if names:  # the plugin gives each worker its database in the first of them
        env[setting_for("plugin", "db-url-env").env] = names[0]
    return tuple(env.items())


def _load_durations(path: Path | None) -> dict[str, float]:
    if path is None:
        default = Path(DEFAULT_DURATIONS)
        return parse_durations(default.read_text(encoding="utf-8"), str(default)) if default.is_file() else {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DbTestActionError(
            f"--durations {path}: cannot read ({exc.strerror}); build it with `db-test-action durations`",
            EXIT_USAGE,
        ) from None
    return parse_durations(text, str(path))


def plan_from_args(args: argparse.Namespace) -> RunPlan:
    if args.shard > args.shards:
        raise DbTestActionError(
            f"--shard: {args.shard} is not a shard of {args.shards}; use 1..{args.shards} or all"
        )
    if args.reruns < 0:
        raise DbTestActionError(
            f"--reruns: must be 0 or more, got {args.reruns}; give 0 or a positive number"
        )
    is_tty = sys.stderr.isatty()
    # pytest's own output goes to each run's log file (its path printed); the console keeps progress and
    # the summary readable, however many runs. `show` streams it as well.
    show = args.pytest_output == "show"
    try:
        extra = shlex.split(args.pytest_args)
    except ValueError as exc:
        raise DbTestActionError(f"--pytest-args: {exc}; quote it as a shell would") from None
    return RunPlan(
        pytest_args=(*args.passthrough, *extra),
        shard=args.shard,
        shards=args.shards,
        repeat=args.repeat,
        until_failure=args.until_failure,
        reruns=args.reruns,
        workers=args.workers,
        durations=_load_durations(args.durations),
        results_dir=args.results_dir,
        group_scopes=not args.no_group_scopes,
        show_output=show,
        progress_tty=is_tty,
        python=args.python or sys.executable,
        database=args.database,
        extra_env=_plugin_env(args),
        plugin_path=args.plugin_path,
        load_plugin=bool(args.plugin_path)
        and not plugin_installed(args.python or sys.executable, os.environ),
        timeout_s=args.timeout,
        deadline=None if args.timeout is None else time.monotonic() + args.timeout,
        test_timeout_s=args.test_timeout,
        stop_grace_s=args.stop_grace or 0.0,
    )


def say(message: str) -> None:
    print(f"db-test-action: {message}", file=sys.stderr, flush=True)


def _server_log_name(plan: RunPlan) -> str:
    # One file per shard job, so shard artifacts downloaded side by side never overwrite each other.
    return "server-all.jsonl" if plan.shard == 0 else f"server-shard-{plan.shard}.jsonl"


def _detached(name_or_file: str) -> ServerInfo:
    path = Path(name_or_file)
    return read_state(path if path.suffix == ".json" or path.is_file() else default_state_file(name_or_file))


def run(args: argparse.Namespace, planned_workers: int | None = None) -> int:
    """`planned_workers`: the doctor's serial run records the workers it checks headroom for."""
    resolve_launch_settings(args, "run")
    plan = dataclasses.replace(plan_from_args(args), planned_workers=planned_workers)
    log_name = None if args.no_server_log else _server_log_name(plan)
    opts = dataclasses.replace(
        launch_options(args),
        server_log=not args.no_server_log,
        log_statements=args.log_statements,
        log_copy_to=str(plan.results_dir.resolve() / log_name) if log_name else None,
    )
    detached = _detached(args.server_state) if args.server_state else None
    server = None if args.database_url or detached else LocalServer(opts)
    if args.database_url and not detached:
        plan = dataclasses.replace(plan, server="external")
    elif detached is not None and detached.data_dir is None:
        plan = dataclasses.replace(plan, server="external")  # a state file that only records a URL
    elif detached is None or detached.server_log_dir:
        plan = dataclasses.replace(plan, server_log=log_name)
    if server is not None:
        setting = dict(opts.settings).get("max_connections", "")
        plan = dataclasses.replace(
            plan, max_connections=int(setting) if setting.isdigit() else opts.max_connections
        )
    with stop_on_signals():
        try:
            if detached is not None:
                info = detached
            elif server is None:
                info = use_external(args.database_url, args.extensions)
            else:
                info = server.start()
            info = suite_url_options(args, info)
            # A detached server of ours counts as owned: its template1 holds the extensions.
            databases = Databases(info, owns_server=server is not None or info.data_dir is not None)
            code, outcomes = 0, []
            for shard in [plan.shard] if plan.shard else range(1, plan.shards + 1):
                if plan.deadline is not None and time.monotonic() >= plan.deadline:
                    say(f"--timeout: {plan.timeout_s:g}s reached; shards {shard}..{plan.shards} not started")
                    break
                shard_plan = dataclasses.replace(plan, shard=shard)
                shard_code, shard_outcomes = run_shard(
                    shard_plan, info, databases, say, sys.stderr if plan.progress_tty else None
                )
                code = worse_exit(code, shard_code)
                outcomes += [(shard, o) for o in shard_outcomes]
        finally:
            if server is not None:
                server.stop()  # appends the server log to the results dir (opts.log_copy_to)
            elif detached is not None and detached.server_log_dir and opts.log_copy_to:
                copy_server_log(Path(detached.server_log_dir), Path(opts.log_copy_to))
    for shard, outcome in outcomes:
        if outcome.crash:
            if not plan.show_output:
                tail = (
                    outcome.junit.with_suffix(".log").read_text(errors="replace").strip().splitlines()[-15:]
                )
                print("\n".join(tail), file=sys.stderr)
            raise DbTestActionError(
                f"run: shard {shard} run {outcome.run}: {outcome.crash}; {outcome.crash_fix}",
                EXIT_USAGE if outcome.exit_code == 4 else EXIT_GATE,
            )
    if code != 0 and not plan.show_output:
        logs = [str(o.junit.with_suffix(".log")) for _shard, o in outcomes if o.exit_code != 0]
        more = f" and {len(logs) - 3} more" if len(logs) > 3 else ""
        say(f"see {', '.join(logs[:3])}{more} for pytest's output of the runs that failed")
    print(f"results: {os.fspath(plan.results_dir)}")
    if code == 0 or args.no_fail:
        return 0
    return EXIT_GATE
